"""Bad input never reaches the user as a traceback (issue 15, item 5): each case ends with one
line on stderr, the contract's exit code (1 refused, 2 bad usage or invalid model) and, where
a database is involved, the database exactly as it was (every row of every table compared)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from metacrm.cli.main import app

CONTRACT = str(Path(__file__).parent / "fixtures" / "valid" / "contract.yaml")


def cli(*args: str, code: int) -> str:
    """Run the CLI; assert the exit code, one line on stderr and no traceback; the line."""
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.stderr}"
    assert len(lines) == 1, f"{args}: stderr is not one line:\n{result.stderr}"
    return lines[0]


def dump(db_url: str) -> dict[str, list]:
    """Every row of every table (conftest.dump_database on a fresh engine)."""
    from conftest import dump_database

    from metacrm.runtime.engine import make_engine

    engine = make_engine(db_url)
    try:
        return dump_database(engine)
    finally:
        engine.dispose()


@pytest.fixture
def crm_db(db_url):
    """The contract model migrated into an empty database with a client and a deal; the URL."""
    import metacrm

    with metacrm.connect(CONTRACT, db_url) as crm:
        crm.migrate()
        client = crm.create("client", {"name": "Ромашка"})
        crm.create("deal", {"title": "Поставка", "amount": "100.00", "client": client["id"]})
    return db_url


def refused(db_url: str, *args: str, code: int = 1, model: str = CONTRACT) -> str:
    """The one stderr line of a command on the database, which must be left unchanged."""
    before = dump(db_url)
    line = cli(*args, "--model", model, "--db", db_url, code=code)
    assert dump(db_url) == before
    return line


# -- the model file ------------------------------------------------------------------------------
def _alias_bomb() -> str:
    lines = ["metacrm: 1", "name: bomb", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join([*lines, "entities: {}", ""])


def _merge_bomb() -> str:
    lines = ["metacrm: 1", "name: bomb", "b0: &b0 {a: 1, b: 2}"]
    lines += [f"b{i}: &b{i} {{<<: [*b{i - 1}, *b{i - 1}]}}" for i in range(1, 64)]
    return "\n".join([*lines, ""])


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        (_alias_bomb(), 8, "alias *a4 expands the document beyond 200,000 nodes"),
        (_merge_bomb(), 17, "alias *b13 expands the document beyond 200,000 nodes"),
        ("metacrm: 1\nname: deep\nx: " + "[" * 100_000 + "]" * 100_000 + "\n", 3, "nesting deeper than 100 levels"),
        ("metacrm: 1\nname: deep\nx: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", 3, "nesting deeper than 100"),
        ("metacrm: 1\nname: r\nx: &a [1, *a]\n", 3, "alias *a refers to a node that contains it"),
    ],
    ids=["alias-bomb", "merge-bomb", "deep-flow", "deep-mapping", "recursive-alias"],
)
def test_hostile_yaml_is_refused_with_its_line(tmp_path, text, line, says) -> None:
    model = tmp_path / "hostile.yaml"
    model.write_text(text, encoding="utf-8")
    message = cli("list", "client", "--model", str(model), "--db", f"sqlite:///{tmp_path / 'crm.db'}", code=2)
    assert message.split(":")[0].endswith("hostile.yaml") and message.split(":")[1] == str(line) and says in message
    assert not (tmp_path / "crm.db").exists()


def test_yaml_limits_leave_real_models_alone(root) -> None:
    from metacrm.model.yaml_source import parse_source

    for path in sorted((root / "examples").glob("*.yaml")):
        assert parse_source(path.read_text(encoding="utf-8"), str(path)).problems == []
    nested = "x: " + "[" * 99 + "]" * 99 + "\n"  # just inside the nesting limit
    assert parse_source(nested).problems == []


# -- opening the database --------------------------------------------------------------------------
def _pg_url(rest: str) -> str:
    return f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{rest}"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite:///{tmp}/missing/dir/crm.db", "cannot open the database sqlite:///"),
        ("sqlite:///{tmp}/not-a-db.db", "file is not a database"),
        (_pg_url("1/test"), "cannot open the database postgresql+psycopg://postgres:***@127.0.0.1:1/test"),
        ("not a url", "not a database URL: 'not a url'"),
        ("postgresql://postgres:s3cret@host:port:x/db", "not a database URL: 'postgresql://postgres:***@host"),
        ("mysql://u@h/db", "unsupported database 'mysql'"),
        ("sqlite:///{tmp}/crm.db?timeout=soon", "timeout must be a number of seconds"),
    ],
    ids=[
        "missing-dir",
        "not-a-database",
        "pg-unreachable",
        "malformed",
        "malformed-password",
        "unsupported",
        "timeout",
    ],
)
def test_a_database_that_does_not_open_is_bad_usage(tmp_path, url, says) -> None:
    (tmp_path / "not-a-db.db").write_text("hello, I am a text file\n" * 100)
    url = url.replace("{tmp}", str(tmp_path))
    for command in (["list", "client"], ["migrate"]):
        line = cli(*command, "--model", CONTRACT, "--db", url, code=2)
        assert line.startswith("error: ") and says in line and "s3cret" not in line
    assert (tmp_path / "not-a-db.db").read_text() == "hello, I am a text file\n" * 100


def test_an_unknown_postgresql_database_is_bad_usage() -> None:
    from conftest import PG_URL, pg_reason

    if pg_reason():
        pytest.skip(pg_reason())
    url = PG_URL.rsplit("/", 1)[0] + "/metacrm_no_such_database"
    line = cli("list", "client", "--model", CONTRACT, "--db", url, code=2)
    assert "cannot open the database" in line and 'database "metacrm_no_such_database" does not exist' in line


def test_a_locked_sqlite_database_says_who_and_how_long(tmp_path) -> None:
    import sqlite3

    import metacrm

    path = tmp_path / "crm.db"
    with metacrm.connect(CONTRACT, f"sqlite:///{path}") as crm:
        crm.migrate()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing
    try:
        line = refused(f"sqlite:///{path}?timeout=0.2", "create", "client", "name=Ромашка")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert "is locked by another process (waited 0." in line and "try again" in line
    with pytest.raises(metacrm.ConflictError, match="locked by another process"):
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            metacrm.connect(CONTRACT, f"sqlite:///{path}?timeout=0.1").create("client", {"name": "Ромашка"})
        finally:
            other.execute("ROLLBACK")
            other.close()


# -- numbers beyond 64 bits --------------------------------------------------------------------------
HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["get", "deal", HUGE], 1, f"deal {HUGE} not found"),
        (["update", "deal", HUGE, "title=x"], 1, f"deal {HUGE} not found"),
        (["move", "deal", HUGE, "qualified"], 1, f"deal {HUGE} not found"),
        (["delete", "deal", HUGE], 1, f"deal {HUGE} not found"),
        (["history", "deal", HUGE], 1, f"deal {HUGE} not found"),
        (["create", "deal", "title=x", f"client={HUGE}"], 1, "deal.client: "),
        (["list", "deal", "--where", f"id = {HUGE}"], 1, "deal.id: "),
        (["list", "deal", "--where", "amount * 1000000000000 * 1000000000000 > 1"], None, "out of range"),
        (["list", "deal", "--where", "id * 1000000000000 * 1000000000000 > 1"], 1, "out of range"),
    ],
    ids=["get", "update", "move", "delete", "history", "link", "filter-literal", "money-product", "id-product"],
)
def test_numbers_beyond_64_bits_are_refused(crm_db, args, code, says) -> None:
    if code is None:  # SQLite computes money in 64-bit cents (refused); PostgreSQL in NUMERIC
        if crm_db.startswith("postgresql"):
            result = CliRunner().invoke(app, [*args, "--model", CONTRACT, "--db", crm_db])
            assert result.exit_code == 0 and "Поставка" in result.stdout
            return
        code = 1
    line = refused(crm_db, *args, code=code)
    assert line.startswith("error: ") and says in line


def test_limit_and_offset_beyond_64_bits_mean_no_limit(crm_db) -> None:
    import metacrm

    result = CliRunner().invoke(app, ["list", "deal", "--limit", HUGE, "--model", CONTRACT, "--db", crm_db])
    assert result.exit_code == 0 and "Поставка" in result.stdout
    result = CliRunner().invoke(app, ["list", "deal", "--offset", HUGE, "--model", CONTRACT, "--db", crm_db])
    assert result.exit_code == 0 and "Поставка" not in result.stdout
    with metacrm.connect(CONTRACT, crm_db) as crm:
        assert len(crm.find("deal", limit=10**30)) == 1 and crm.find("deal", offset=10**30) == []
        with pytest.raises(metacrm.NotFound):
            crm.get("deal", 10**20)


# -- text no database stores alike -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["create", "client", "name=\udcff"], "client.name: '\\udcff' is not valid text: character 1 is a lone"),
        (["update", "client", "1", "city=Мос\udcffква"], "client.city: 'Мос\\udcffква' is not valid text"),
        (["note", "client", "1", "ab\udcff"], "client: note: 'ab\\udcff' is not valid text"),
        (["move", "deal", "1", "qualified", "--note", "\udcff"], "deal: note: '\\udcff' is not valid text"),
    ],
    ids=["create", "update", "note", "move-note"],
)
def test_invalid_utf8_arguments_are_refused_naming_the_field(crm_db, args, says) -> None:
    line = refused(crm_db, *args)
    assert line.startswith("error: ") and says in line


def test_invalid_utf8_argv_from_a_real_shell(crm_db) -> None:
    import os
    import subprocess
    import sys

    before = dump(crm_db)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    args = [sys.executable, "-m", "metacrm", "create", "client", b"name=\xff\xfe", "--model", CONTRACT, "--db", crm_db]
    done = subprocess.run(args, capture_output=True, env=env, timeout=60)
    assert done.returncode == 1 and b"Traceback" not in done.stderr
    assert done.stderr.decode("utf-8", "replace").splitlines() == [
        "error: client.name: '\\udcff\\udcfe' is not valid text: character 1 is a lone surrogate "
        "(U+DCFF; invalid UTF-8 input?)"
    ]
    assert dump(crm_db) == before


@pytest.mark.parametrize(
    ("values", "field"),
    [({"name": "a\x00b"}, "name"), ({"name": "a\ud800"}, "name"), ({"name": "a", "city": "x\x00"}, "city")],
    ids=["nul", "lone-surrogate", "nul-other-field"],
)
def test_nul_and_lone_surrogates_are_refused_alike_by_the_library(crm_db, values, field) -> None:
    import metacrm

    before = dump(crm_db)
    with metacrm.connect(CONTRACT, crm_db) as crm:
        with pytest.raises(metacrm.ValidationError, match=f"^client.{field}: ") as info:
            crm.create("client", values)
        assert [i.field for i in info.value.issues] == [field]
        with pytest.raises(metacrm.ValidationError, match=f"^client.{field}: "):
            crm.update("client", 1, values)
        with pytest.raises(metacrm.ValidationError, match="^client: note: "):
            crm.note("client", 1, "a\x00")
    assert dump(crm_db) == before


def test_nul_in_an_imported_csv_is_refused_alike(crm_db, tmp_path) -> None:
    csv = tmp_path / "clients.csv"
    csv.write_bytes('name,city\nА,"Мос\x00ква"\n'.encode())
    line = refused(crm_db, "import", "client", str(csv))
    assert "line 2, city: 'Мос\\x00ква' contains a NUL character" in line


# -- sums near the money limit -----------------------------------------------------------------------
def test_sums_near_the_money_limit_are_exact(db_url) -> None:
    import json
    from decimal import Decimal

    import metacrm

    top = Decimal("9999999999999999.99")  # the largest money value (NUMERIC(18,2))
    with metacrm.connect(CONTRACT, db_url) as crm:
        crm.migrate()
        client = crm.create("client", {"name": "Ромашка"})
        crm.create_many("deal", [{"title": f"d{i}", "amount": top, "client": client["id"]} for i in range(12)])
        crm.create("deal", {"title": "no amount", "client": client["id"]})
        exact = top * 12
        funnel = crm.funnel("deal")
        assert funnel["stages"][0]["amount"] == exact
        assert crm.funnel("deal", as_of="2999-01-01")["stages"][0]["amount"] == exact  # from the history
        assert crm.funnel("deal", by="owner")[0]["stages"][0]["amount"] == exact
        board = crm.board("deal")
        assert board["amount"] == exact and board["columns"][0]["amount"] == exact
        group = crm.report_group("deal", by="stage", sum="amount")
        assert group["rows"][0]["sum"] == exact and group["total"]["sum"] == exact
    for args in (["report", "funnel", "deal"], ["report", "group", "deal", "--by", "client", "--sum", "amount"]):
        result = CliRunner().invoke(app, [*args, "--format", "json", "--model", CONTRACT, "--db", db_url])
        assert result.exit_code == 0, result.output
        assert str(exact) in result.stdout and json.loads(result.stdout)
    result = CliRunner().invoke(app, ["board", "deal", "--model", CONTRACT, "--db", db_url])
    assert result.exit_code == 0 and "Traceback" not in result.output


def test_exact_sum_joins_halves_of_negative_and_huge_values() -> None:
    from metacrm.expr.functions import _join64

    for values in ([2**62, 2**62, 2**62], [-(2**63), -(2**63), 5], [-1, -2, 3], [2**63 - 1, 1]):
        hi, lo = sum(v >> 32 for v in values), sum(v & 0xFFFFFFFF for v in values)
        assert int(_join64(hi, lo)) == sum(values)


# -- tick at the ends of the calendar -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("example", "now"),
    [("service_desk", "0001-01-01"), ("srm", "9999-12-31T23:59:59"), ("trade", "0001-01-01T00:00:00+14:00")],
)
def test_tick_at_the_ends_of_the_calendar(db_url, root, example, now) -> None:
    import metacrm

    model = str(root / "examples" / f"{example}.yaml")
    with metacrm.connect(model, db_url) as crm:
        crm.migrate()
    line = refused(db_url, "tick", "--now", now, model=model)
    assert line.startswith("error: tick: now ") and "too close to the end of the calendar" in line


# -- files a command writes ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("report", "says"),
    [("missing/report.csv", "does not exist"), (".", "is a directory"), ("locked/report.csv", "no permission")],
    ids=["missing-directory", "a-directory", "no-permission"],
)
def test_import_refuses_a_report_it_cannot_write_before_importing(crm_db, tmp_path, report, says) -> None:
    import os

    import metacrm

    if says == "no permission":
        if os.geteuid() == 0:
            pytest.skip("root may write anywhere")
        (tmp_path / "locked").mkdir(mode=0o500)
    data = tmp_path / "clients.csv"
    data.write_text("name,city\nВасилёк,Тверь\n,Нет имени\n", encoding="utf-8")
    path = str(tmp_path / report)
    args = ("import", "client", str(data), "--skip-invalid", "--report", path)
    line = refused(crm_db, *args, code=2)
    assert line.startswith("error: --report: cannot write") and says in line and "nothing was imported" in line
    with metacrm.connect(CONTRACT, crm_db) as crm:
        from metacrm.io.csv_io import import_csv

        with pytest.raises(metacrm.ValidationError, match=f"client: cannot write the report: .*{says}"):
            import_csv(crm, "client", str(data), skip_invalid=True, report_path=path)
        assert crm.count("client") == 1


@pytest.mark.parametrize(
    "args",
    [["export", "client", "--output"], ["report", "group", "deal", "--by", "stage", "--output"]],
    ids=["export", "report"],
)
@pytest.mark.parametrize("where", ["missing/out.csv", "."], ids=["missing-directory", "a-directory"])
def test_an_output_file_that_cannot_be_written_is_bad_usage(crm_db, tmp_path, args, where) -> None:
    line = refused(crm_db, *args, str(tmp_path / where), code=2)
    assert line.startswith("error: --output: cannot write")


# -- huge search fields ------------------------------------------------------------------------------
SEARCHABLE = """
metacrm: 1
name: docs
entities:
  doc:
    fields:
      title: {type: string, required: true}
      body: {type: text}
    search: [title, body]
"""


def test_a_huge_search_field_is_stored_and_found_by_its_beginning(db_url, tmp_path) -> None:
    import random
    import string

    import metacrm

    model = tmp_path / "docs.yaml"
    model.write_text(SEARCHABLE, encoding="utf-8")
    rng = random.Random(15)
    words = [
        "".join(rng.choices(string.ascii_lowercase + "абвгдежзиклмнопрстуфхцчшщэюя", k=rng.randint(3, 10)))
        for _ in range(400_000)
    ]
    body = " ".join(words)[:3_000_000]  # 3 MB: a tsvector of it would pass PostgreSQL's 1 MB
    with metacrm.connect(str(model), db_url) as crm:
        crm.migrate()
        record = crm.create("doc", {"title": "Отчёт", "body": body})
        assert len(crm.get("doc", record["id"])["body"]) == len(body)
        assert [r["id"] for r in crm.search(words[0])] == [record["id"]]
        assert [r["id"] for r in crm.search(words[10_000])] == [record["id"]]
        crm.update("doc", record["id"], {"body": body[::-1]})
        assert crm.search("Отчёт")[0]["id"] == record["id"]
    result = CliRunner().invoke(app, ["search", "отчёт", "--model", str(model), "--db", db_url])
    assert result.exit_code == 0 and "Отчёт" in result.stdout


def test_an_older_unbounded_search_index_is_replaced_by_migrate(db_url, tmp_path) -> None:
    import metacrm
    from metacrm.runtime.engine import make_engine, writing
    from metacrm.storage import naming

    model = tmp_path / "docs.yaml"
    model.write_text(SEARCHABLE, encoding="utf-8")
    with metacrm.connect(str(model), db_url) as crm:
        crm.migrate()
    engine = make_engine(db_url)
    with writing(engine) as conn:  # what an older metacrm created: a B-tree on the long text
        conn.exec_driver_sql(f'CREATE INDEX "{naming.index_name("doc", ["body"])}" ON doc (body)')
    engine.dispose()
    body = " ".join(f"{i:x}{i * 7919 % 100_003:x}" for i in range(10_000))  # 120 kB, incompressible enough
    with metacrm.connect(str(model), db_url) as crm:
        assert crm.migrate() == []
        crm.create("doc", {"title": "long", "body": body})
        assert crm.search("long")[0]["title"] == "long"


# -- the last resort: whatever the library let through is still one line ---------------------------
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["report", "funnel", "deal", "--to", "9999-12-31"], "a date is out of range"),
        (["list", "client", "--where", "name = 'a\udcff'"], "text is not valid Unicode"),
        (["create", "task", "title=x", "due=9999-12-31T23:59:59-14:00"], "task.due: "),
    ],
    ids=["report-to-end-of-calendar", "filter-lone-surrogate", "datetime-past-9999-in-utc"],
)
def test_driver_and_python_errors_become_one_line(crm_db, args, says) -> None:
    line = refused(crm_db, *args)
    assert line.startswith("error: ") and says in line


def test_library_users_get_metacrm_errors_too(crm_db) -> None:
    import metacrm

    with metacrm.connect(CONTRACT, crm_db) as crm:
        with pytest.raises(metacrm.ValidationError, match="not valid Unicode"):
            crm.find("client", where="name = 'a\ud800'")
        with pytest.raises(metacrm.ValidationError, match="out of range"):
            crm.find("deal", where="id * 1000000000000 * 1000000000000 > 1")
        with pytest.raises(metacrm.NotFound):
            crm.get("client", 2**64)
        with crm.transaction():  # inside a transaction too, and the transaction goes on
            with pytest.raises(metacrm.ValidationError, match="city: "):
                crm.create("client", {"name": "x", "city": "\x00"})
            crm.create("client", {"name": "Василёк"})
        assert crm.count("client") == 2
