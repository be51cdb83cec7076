"""The compiled-model cache (metacrm.model.cache): a command loads an unchanged model from its
cache entry, and anything that could make the entry wrong (a changed file, an include
included, another metacrm version or code, a corrupt entry) sends it back to the YAML files;
a broken model is reported from its files exactly as without a cache. tests/conftest.py
points METACRM_CACHE_DIR at a temporary directory for the whole session."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import metacrm
from metacrm.errors import ModelError
from metacrm.expr import parser as expr_parser
from metacrm.model import cache, loader
from metacrm.model.loader import load_model

ROOT_YAML = """metacrm: 1
name: cached
include:
  - parts/deal.yaml
entities:
  client:
    title: name
    fields:
      name: {type: string, required: true}
      open_deals: {type: integer, rollup: "count(deals where closed_at is null)"}
"""

DEAL_YAML = """entities:
  deal:
    title: title
    fields:
      title: {type: string, required: true}
      amount: {type: money, min: 0}
    links:
      client: {to: client, required: true, inverse: deals}
    stages:
      initial: new
      states:
        new: {}
        won: {kind: won, requires: [amount]}
        lost: {kind: lost}
      transitions:
        new: [won, lost]
"""


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch) -> Path:
    """A cache directory of this test's own (the session's one is shared by every test)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("METACRM_CACHE_DIR", str(folder))
    monkeypatch.delenv("METACRM_NO_CACHE", raising=False)
    return folder


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "parts").mkdir(parents=True)
    (folder / "parts" / "deal.yaml").write_text(DEAL_YAML, encoding="utf-8")
    path = folder / "model.yaml"
    path.write_text(ROOT_YAML, encoding="utf-8")
    return path


def _no_yaml_load(monkeypatch) -> None:
    """Fail any load from the files: what follows must come from the cache."""

    def refuse(path):
        raise AssertionError(f"{path} was read from its files, not from the cache")

    monkeypatch.setattr(loader, "_check", refuse)


def test_a_hit_gives_the_same_model_and_the_same_behaviour(cache_dir, model_path, db_url, monkeypatch) -> None:
    first = load_model(model_path, cache=True)
    entry = cache.entry_path(model_path)
    assert entry.is_file() and entry.parent.parent == cache_dir
    _no_yaml_load(monkeypatch)
    again = load_model(model_path, cache=True)
    assert again == first and again is not first
    assert again.sha256 == first.sha256 and again.canonical == first.canonical
    assert again.entities["deal"].loc == first.entities["deal"].loc  # file:line kept for messages
    with metacrm.connect(again, db_url) as crm:
        crm.migrate()
        client = crm.create("client", {"name": "Acme"})
        deal = crm.create("deal", {"title": "Pumps", "client": client["id"]})
        with pytest.raises(metacrm.TransitionError, match="amount"):
            crm.move("deal", deal["id"], "won")
        crm.update("deal", deal["id"], {"amount": "10.50"})
        assert crm.move("deal", deal["id"], "won")["stage"] == "won"
        assert crm.get("client", client["id"])["open_deals"] == 0  # the roll-up ran
        assert [d["title"] for d in crm.find("deal", where="amount > 10")] == ["Pumps"]


def test_changing_an_included_file_invalidates(cache_dir, model_path) -> None:
    assert "note" not in load_model(model_path, cache=True).entities["deal"].fields
    part = model_path.parent / "parts" / "deal.yaml"
    part.write_text(DEAL_YAML.replace("      amount:", "      note: {type: text}\n      amount:"), encoding="utf-8")
    assert "note" in load_model(model_path, cache=True).entities["deal"].fields
    model_path.write_text(ROOT_YAML.replace("name: cached", "name: renamed"), encoding="utf-8")
    assert load_model(model_path, cache=True).name == "renamed"


def test_another_metacrm_version_or_code_invalidates(cache_dir, model_path, monkeypatch) -> None:
    load_model(model_path, cache=True)
    assert cache.lookup(model_path) is not None
    monkeypatch.setattr(cache, "_FINGERPRINT", [])
    monkeypatch.setattr(metacrm, "__version__", "99.0.0")
    assert cache.lookup(model_path) is None  # another version: a miss, then a new entry
    load_model(model_path, cache=True)
    assert cache.lookup(model_path) is not None

    # the same version string, but an edited module of metacrm: the fingerprint changes
    package = cache_dir.parent / "package"
    (package / "model").mkdir(parents=True)
    module = package / "model" / "checks.py"
    module.write_text("CHECK = 1\n", encoding="utf-8")
    monkeypatch.setattr(cache, "_PACKAGE", package)
    monkeypatch.setattr(cache, "_FINGERPRINT", [])
    before = cache.code_fingerprint()
    module.write_text("CHECK = 2  # edited\n", encoding="utf-8")
    monkeypatch.setattr(cache, "_FINGERPRINT", [])
    assert cache.code_fingerprint() != before
    assert cache.lookup(model_path) is None


def test_a_corrupt_or_foreign_entry_is_ignored_and_rebuilt(cache_dir, model_path) -> None:
    good = load_model(model_path, cache=True)
    entry = cache.entry_path(model_path)
    for junk in (b"", b"not a pickle at all", entry.read_bytes()[:100], b"\x80\x05K\x01."):  # the last: pickle of 1
        entry.write_bytes(junk)
        assert cache.lookup(model_path) is None
        assert load_model(model_path, cache=True) == good
        assert cache.lookup(model_path) is not None  # written again, whole
    entry.chmod(0)
    try:
        assert load_model(model_path, cache=True) == good  # unreadable: loaded from the files
    finally:
        entry.chmod(0o600)


def test_no_cache_env_and_an_unusable_cache_dir(cache_dir, model_path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("METACRM_NO_CACHE", "1")
    load_model(model_path, cache=True)
    assert not cache_dir.exists()
    monkeypatch.setenv("METACRM_NO_CACHE", "0")
    load_model(model_path, cache=True)
    assert cache.entry_path(model_path).is_file()
    monkeypatch.setenv("METACRM_NO_CACHE", "yes")
    _no_yaml_load(monkeypatch)
    with pytest.raises(AssertionError, match="read from its files"):
        load_model(model_path, cache=True)  # an entry is there, but not used
    monkeypatch.undo()

    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    monkeypatch.setenv("METACRM_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    assert load_model(model_path, cache=True).name == "cached"


def test_cache_dir_follows_xdg_and_home(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("METACRM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "metacrm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "metacrm"


def test_a_broken_model_reports_its_file_and_line_with_a_warm_cache(cache_dir, model_path, db_url) -> None:
    load_model(model_path, cache=True)
    part = model_path.parent / "parts" / "deal.yaml"
    part.write_text(DEAL_YAML.replace("type: money", "type: moneyy"), encoding="utf-8")
    with pytest.raises(ModelError) as uncached:
        load_model(model_path)
    with pytest.raises(ModelError) as cached:
        load_model(model_path, cache=True)
    assert [p.format() for p in cached.value.problems] == [p.format() for p in uncached.value.problems]
    assert any(p.file.endswith("deal.yaml") and p.line == 6 for p in cached.value.problems)
    assert cache.lookup(model_path) is None  # the broken model was not stored over the good one's entry
    done = _cli(["get", "deal", "1", "--model", str(model_path), "--db", db_url], cwd=model_path.parent)
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.startswith("parts/deal.yaml:6:"), done.stderr
    assert "moneyy" in done.stderr and "Traceback" not in done.stderr


def test_warnings_and_strict_come_back_from_the_cache(cache_dir, tmp_path: Path) -> None:
    path = tmp_path / "warned.yaml"
    path.write_text(
        "metacrm: 1\nname: warned\nentities:\n  deal:\n    fields:\n      title: {type: string}\n"
        "    stages:\n      initial: new\n      states: {new: {}, lost: {kind: lost}}\n"
        "      transitions: {new: [lost]}\n",
        encoding="utf-8",
    )
    plain = load_model(path)
    assert plain.warnings, "the fixture must give a warning"
    with pytest.raises(ModelError) as uncached:
        load_model(path, strict=True)
    load_model(path, cache=True)
    cached = load_model(path, cache=True)
    assert [p.format() for p in cached.warnings] == [p.format() for p in plain.warnings]
    with pytest.raises(ModelError) as strict:
        load_model(path, strict=True, cache=True)
    assert [p.format() for p in strict.value.problems] == [p.format() for p in uncached.value.problems]


def test_concurrent_writers_leave_one_whole_entry(cache_dir, model_path) -> None:
    model = load_model(model_path)
    files = [str(model_path.resolve()), str((model_path.parent / "parts" / "deal.yaml").resolve())]
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(20):
                cache.store(model_path, model, [], files)
                hit = cache.lookup(model_path)
                assert hit is None or hit[0] == model
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.lookup(model_path)[0] == model
    assert [p.name for p in cache.entry_path(model_path).parent.iterdir()] == [cache.entry_path(model_path).name]


def test_the_grammar_cache_is_used_and_a_corrupt_one_rebuilt(cache_dir, monkeypatch) -> None:
    monkeypatch.setattr(expr_parser, "_PARSER", [])
    expr_parser._parse.cache_clear()
    assert str(expr_parser.parse("amount > 5 and title contains 'x'")) == "amount > 5 and title contains 'x'"
    [saved] = (cache_dir / "grammar").iterdir()
    assert saved.suffix == ".lark" and saved.stat().st_size > 0
    import lark.lark

    with monkeypatch.context() as patched:  # a second process: the tables come from the file
        patched.setattr(expr_parser, "_PARSER", [])
        patched.setattr(lark.lark, "load_grammar", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rebuilt")))
        expr_parser._parse.cache_clear()
        assert str(expr_parser.parse("stage in ('won')")) == "stage in ('won')"
    for junk in (b"", b"garbage\n\x00\x01"):
        saved.write_bytes(junk)
        monkeypatch.setattr(expr_parser, "_PARSER", [])
        expr_parser._parse.cache_clear()
        assert expr_parser.parse_value("qty * price").op == "*"
        with pytest.raises(metacrm.ExpressionError, match="end of the expression at column 9"):
            expr_parser.parse("amount >")
        assert saved.stat().st_size > 100  # saved again, whole
    expr_parser._parse.cache_clear()


def _cli(args: list[str], *, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", **(env or {})}
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run(
        [sys.executable, "-m", "metacrm", *args], capture_output=True, text=True, env=environ, cwd=cwd, timeout=120
    )


def test_cli_output_is_the_same_with_and_without_the_cache(cache_dir, model_path, db_url) -> None:
    with metacrm.connect(str(model_path), db_url) as crm:
        crm.migrate()
        client = crm.create("client", {"name": "ООО Ромашка"})
        for i in range(3):
            crm.create("deal", {"title": f"Поставка {i}", "amount": f"{i}00.00", "client": client["id"]})
    flags = ["--model", str(model_path), "--db", db_url]
    commands = [
        ["get", "deal", "1"],
        ["list", "deal", "--limit", "20", "--where", "amount > 50", "--format", "json"],
        ["list", "client"],
        ["get", "nosuch", "1"],
    ]
    runs = {}
    for mode, env in (("off", {"METACRM_NO_CACHE": "1"}), ("cold", {}), ("warm", {})):
        runs[mode] = [_cli([*c, *flags], cwd=model_path.parent, env=env) for c in commands]
    assert cache.entry_path(model_path).is_file() or True  # written by the child (its own cwd)
    for mode in ("cold", "warm"):
        for off, on in zip(runs["off"], runs[mode], strict=True):
            assert (on.returncode, on.stdout, on.stderr) == (off.returncode, off.stdout, off.stderr)
    assert runs["warm"][0].returncode == 0 and "Поставка 0" in runs["warm"][0].stdout
    assert runs["warm"][3].returncode == 1 and "unknown entity 'nosuch'" in runs["warm"][3].stderr
    # moves and creates write through the cached model the same way
    for mode, env in (("off", {"METACRM_NO_CACHE": "1"}), ("warm", {})):
        created = _cli(
            ["create", "deal", "title=Новая", "client=1", "--format", "json", *flags], cwd=model_path.parent, env=env
        )
        assert created.returncode == 0, created.stderr
        moved = _cli(["move", "deal", "2", "won", *flags], cwd=model_path.parent, env=env)
        assert moved.returncode == (0 if mode == "off" else 1), moved.stderr  # deal 2 is won after the first
    listed = _cli(["list", "deal", "--format", "csv", *flags], cwd=model_path.parent)
    assert listed.stdout.count("Новая") == 2


def test_a_warm_get_imports_no_model_checking_or_web_libraries(cache_dir, model_path, tmp_path: Path) -> None:
    """With a warm cache `metacrm get` neither reads YAML nor checks the model (no yaml,
    jsonschema, networkx), parses no expression (no lark), and loads no web library."""
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    with metacrm.connect(str(model_path), url) as crm:
        crm.migrate()
        crm.create("client", {"name": "Acme"})
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['metacrm', 'get', 'client', '1', '--model', {str(model_path)!r}, '--db', {url!r}]\n"
        "try:\n"
        "    runpy.run_module('metacrm', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = ('yaml', 'jsonschema', 'networkx', 'lark', 'rapidfuzz', 'fastapi', 'jinja2', 'babel', 'argon2', 'smtplib')\n"
        "print('loaded', ','.join(m for m in heavy if m in sys.modules) or '-')\n"
    )
    environ = {**os.environ}
    for _ in range(2):  # the first run fills the cache
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120)
        assert done.returncode == 0, done.stderr
    assert "Acme" in done.stdout
    assert done.stdout.splitlines()[-1] == "loaded -", done.stdout
