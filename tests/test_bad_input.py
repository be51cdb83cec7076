"""Bad input never reaches the user as a traceback (issue 15, item 5): each case ends with one
line on stderr, the contract's exit code (1 refused, 2 bad usage or invalid model) and, where
a database is involved, the database exactly as it was (every row of every table compared)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import MetaData, select
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


def dump(db_url: str) -> dict[str, list[dict]]:
    """Every row of every table, ordered by primary key."""
    from metacrm.runtime.engine import make_engine

    engine = make_engine(db_url)
    try:
        md = MetaData()
        with engine.connect() as conn:
            md.reflect(conn)
            out = {}
            for name, table in md.tables.items():
                key = list(table.primary_key.columns) or list(table.c)
                out[name] = [dict(r) for r in conn.execute(select(table).order_by(*key)).mappings()]
            return out
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
