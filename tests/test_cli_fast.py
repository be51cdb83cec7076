"""The console script's fast path (metacrm.cli.fast) and the typer app give the same stdout,
stderr and exit code for the same command line, on SQLite and PostgreSQL: good input, bad
input the commands refuse, and command lines the fast parser leaves to typer (help, usage
errors). Each path works on its own twin database, seeded the same way, so writes compare."""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

import metacrm
from metacrm.cli import fast
from metacrm.cli.main import main

CONTRACT = str(Path(__file__).parent / "fixtures" / "valid" / "contract.yaml")
STAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(\+00:00)?")

# command lines the fast parser runs itself (the --model/--db options are added)
FAST = [
    ["get", "deal", "1"],
    ["get", "deal", "1", "--format", "json"],
    ["get", "deal", "1", "-c", "title,amount,client", "--wide"],
    ["get", "client", "1", "-f", "csv"],
    ["get", "deal", "999"],
    ["get", "nosuch", "1"],
    ["get", "deal", "abc"],
    ["get", "deal", "1", "--as", "nobody"],
    ["get", "deal", "1", "--columns", "title,nosuch"],
    ["list", "deal", "--limit", "20"],
    ["list", "deal", "-n", "1", "--offset", "1", "-f", "csv"],
    ["list", "deal", "--where", "amount > 100", "--order-by", "-amount", "--columns", "title,amount"],
    ["list", "deal", "-o", "-title", "--expand", "--format=json"],
    ["list", "deal", "--where", "amount >"],
    ["list", "deal", "--where", "nosuch = 1"],
    ["list", "deal", "--columns", "nosuch"],
    ["list", "deal", "--limit", "0"],
    ["list", "deal", "--archived"],  # the contract model has no archive: refused alike
    ["list", "deal", "--archived", "--with-archived"],
    ["list", "nosuch"],
    ["create", "deal", "title=Поставка", "client=1", "amount=100"],
    ["create", "client", "--format=json", "name=ООО Ромашка", "city=Москва"],
    ["create", "deal", "title=X", "client=1", "amount=abc"],
    ["create", "deal", "title=X"],
    ["create", "deal", "noequals"],
    ["create", "deal", "title=X", "client=99"],
    ["create", "deal"],
    ["move", "deal", "1", "qualified"],
    ["move", "deal", "1", "proposal", "--note", "звонок", "-f", "json"],
    ["move", "deal", "2", "won"],
    ["move", "deal", "2", "nosuch"],
    ["move", "deal", "2", "qualified", "--version", "99"],
    ["move", "deal", "2", "qualified", "--version", "1"],
    ["move", "deal", "999", "qualified"],
]
# command lines left to typer: help, usage errors, options the fast parser does not know
TYPER = [
    ["get", "deal"],
    ["get", "deal", "1", "2"],
    ["get", "deal", "1", "--help"],
    ["get", "deal", "1", "--bogus"],
    ["get", "deal", "1", "--format", "xml"],
    ["get", "deal", "1", "--wide=yes"],
    ["get", "deal", "-1"],
    ["list", "deal", "--limit", "-1"],
    ["list", "deal", "--limit", "x"],
    ["list", "deal", "--limit", "007"],
    ["list", "deal", "-fjson"],
    ["list", "deal", "--", "x"],
    ["list"],
    ["create"],
    ["move", "deal", "1"],
    ["move", "deal", "1", "won", "--version", "one"],
    ["--log-level", "error", "get", "deal", "1"],
    ["moves", "deal", "1"],
]


@contextmanager
def _twin_urls(dialect: str, tmp_path: Path):
    if dialect == "sqlite":
        yield f"sqlite:///{tmp_path / 'fast.db'}", f"sqlite:///{tmp_path / 'slow.db'}"
        return
    from conftest import pg_reason, pg_schema_url

    if pg_reason():
        pytest.skip(pg_reason())
    with pg_schema_url() as one, pg_schema_url() as two:
        yield one, two


@pytest.fixture(params=["sqlite", "postgresql"])
def twins(request, tmp_path: Path):
    with _twin_urls(request.param, tmp_path) as urls:
        for url in urls:
            with metacrm.connect(CONTRACT, url) as crm:
                crm.migrate()
                crm.create("client", {"name": "ООО «Волга»", "city": "Самара"})
                crm.create("product", {"name": "Сервер", "price": "150000"})
                crm.create("deal", {"title": "Поставка серверов", "amount": "1200.50", "client": 1, "products": [1]})
                crm.create("deal", {"title": "Аренда", "client": 1})
        yield urls


def _run(call, args: list[str], url: str, capsys, monkeypatch) -> tuple:
    monkeypatch.setattr(sys, "argv", ["metacrm", *args])
    with pytest.raises(SystemExit) as stop:
        call()
    out = capsys.readouterr()
    code = stop.value.code or 0

    def clean(text: str) -> str:
        return STAMP.sub("<time>", text.replace(url, "<db>"))

    return code, clean(out.out), clean(out.err)


def _both(args: list[str], urls: tuple[str, str], capsys, monkeypatch) -> tuple[tuple, tuple]:
    from metacrm.cli.typer_app import app

    full = [*args, "--model", CONTRACT, "--db"]
    by_main = _run(main, [*full, urls[0]], urls[0], capsys, monkeypatch)
    by_typer = _run(lambda: app([*full, urls[1]]), [*full, urls[1]], urls[1], capsys, monkeypatch)
    return by_main, by_typer


def test_the_fast_path_and_typer_answer_the_same(twins, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    for name in ("METACRM_LOG", "METACRM_USER", "METACRM_MODEL", "METACRM_DB"):
        monkeypatch.delenv(name, raising=False)
    for args in FAST:
        assert fast.parse([*args, "--model", CONTRACT, "--db", twins[0]]) is not None, args
        by_main, by_typer = _both(args, twins, capsys, monkeypatch)
        assert by_main == by_typer, args
    codes = {tuple(a): _both(a, twins, capsys, monkeypatch)[0][0] for a in (["get", "deal", "999"], ["create", "deal"])}
    assert codes == {("get", "deal", "999"): 1, ("create", "deal"): 1}  # refusals reach the exit code


def test_what_the_fast_parser_does_not_know_goes_to_typer(twins, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.delenv("METACRM_LOG", raising=False)
    for args in TYPER:
        assert fast.parse([*args, "--model", CONTRACT, "--db", twins[0]]) is None, args
        by_main, by_typer = _both(args, twins, capsys, monkeypatch)
        assert by_main == by_typer, args
    assert _both(["list", "deal", "--limit", "-1"], twins, capsys, monkeypatch)[0][0] == 2


def test_the_environment_is_read_as_typer_reads_it(twins, capsys, monkeypatch) -> None:
    """--model, --db and --as from METACRM_MODEL, METACRM_DB, METACRM_USER (an empty one is
    unset); METACRM_LOG (the root --log-level) leaves the line to typer."""
    from metacrm.cli.typer_app import app

    monkeypatch.delenv("METACRM_LOG", raising=False)
    monkeypatch.setenv("METACRM_MODEL", CONTRACT)
    monkeypatch.setenv("METACRM_USER", "")
    answers = []
    for call, url in ((main, twins[0]), (lambda: app(["list", "deal", "-f", "csv"]), twins[1])):
        monkeypatch.setenv("METACRM_DB", url)
        assert fast.parse(["list", "deal", "-f", "csv"]) == ("list", fast.parse(["list", "deal", "-f", "csv"])[1])
        answers.append(_run(call, ["list", "deal", "-f", "csv"], url, capsys, monkeypatch))
    assert answers[0] == answers[1] and answers[0][0] == 0 and "Поставка серверов" in answers[0][1]
    keywords = fast.parse(["list", "deal"])[1]
    assert keywords["model"] == CONTRACT and "as_user" not in keywords
    monkeypatch.setenv("METACRM_USER", "nobody")
    assert fast.parse(["list", "deal"])[1]["as_user"] == "nobody"
    assert fast.parse(["list", "deal", "--as", "x"])[1]["as_user"] == "x"  # the option wins
    monkeypatch.setenv("METACRM_LOG", "debug")
    assert fast.parse(["list", "deal"]) is None


FORMULAS = """\
metacrm: 1
name: shop
entities:
  client:
    fields:
      name: {type: string, required: true}
      won_total: {type: money, rollup: "sum(deals.amount where stage = 'won')"}
  deal:
    fields:
      title: {type: string, required: true}
      amount: {type: money}
      net: {type: money, formula: "amount - amount / 10"}
    links:
      client: {to: client, required: true, inverse: deals}
    stages:
      initial: new
      states:
        new: {}
        won: {kind: won}
      transitions:
        - {from: new, to: won, when: "amount > 0"}
"""


def test_warm_commands_import_no_parser_no_graph_library_and_reads_no_pydantic(tmp_path: Path) -> None:
    """With a warm cache: `get`, `list`, `create` and `move` import no pydantic (a record is
    validated by its coercers, called directly); `create` and `move` on a model
    with formulas, roll-ups and guards import no lark (the model's expression trees come from
    the cache entry), no networkx, no YAML, nothing of the migration machinery; and they compute what they must (net, won_total)."""
    import json
    import os
    import subprocess

    model = tmp_path / "shop.yaml"
    model.write_text(FORMULAS, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    with metacrm.connect(str(model), url) as crm:
        crm.migrate()
        crm.create("client", {"name": "Acme"})
    env = {**os.environ, "METACRM_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    env.pop("METACRM_NO_CACHE", None)
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['metacrm', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('metacrm', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = ('yaml', 'jsonschema', 'networkx', 'lark', 'pydantic', 'typer._adapters', 'metacrm.migrate.members')\n"
        "print('loaded', ','.join(m for m in heavy if m in sys.modules) or '-')\n"
    )

    def run(*args: str) -> tuple[str, str]:
        argv = [sys.executable, "-c", probe, *args, "--model", str(model), "--db", url]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        *body, last = done.stdout.splitlines()
        return "\n".join(body), last

    assert run("get", "client", "1")[1] != "loaded -"  # cold: the model is read and checked
    assert run("get", "client", "1")[1] == "loaded -"
    assert run("list", "deal", "--limit", "20")[1] == "loaded -"
    created, loaded = run("create", "deal", "title=Поставка", "amount=100", "client=1", "-f", "json")
    assert loaded == "loaded -" and json.loads(created)["net"] == "90.00"
    moved, loaded = run("move", "deal", "1", "won", "-f", "json")
    assert loaded == "loaded -" and json.loads(moved)["stage"] == "won"
    card, _ = run("get", "client", "1", "-f", "json")
    assert json.loads(card)["record"]["won_total"] == "100.00"
