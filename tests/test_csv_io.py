"""CSV import and export (metacrm.io) on SQLite and PostgreSQL: round trips, links by title,
rejected rows with their line numbers, all-or-nothing, the --skip-invalid report, the CLI."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import pg_schema_url
from sqlalchemy import select
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.io import ImportRefused, export_csv, import_csv

FIXTURES = Path(__file__).parent / "fixtures" / "valid"
CONTRACT = FIXTURES / "contract.yaml"
MAVEN = Path(__file__).parent.parent / "examples" / "maven.yaml"
SYSTEM = ("id", "created_at", "updated_at", "version")


@pytest.fixture
def crm(db_url):
    crm = metacrm.connect(CONTRACT, db_url)
    crm.migrate()
    yield crm
    crm.close()


@pytest.fixture
def fresh_url(db_url, tmp_path):
    """A second empty database of the same dialect as ``db_url``."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with pg_schema_url() as url:
        yield url


def write(path: Path, content: str, *, encoding: str = "utf-8") -> Path:
    path.write_text(content, encoding=encoding)
    return path


def snapshot(crm) -> dict:
    """Every row of every table: a refused import must leave all of them as they were."""
    out = {}
    with crm.engine.connect() as conn:
        for table in crm.storage.metadata.sorted_tables:
            rows = conn.execute(select(table)).mappings().all()
            out[table.name] = sorted(tuple(sorted((k, repr(v)) for k, v in r.items())) for r in rows)
    return out


def fill(crm) -> dict:
    """Clients (one deleted, so ids have a gap), products, deals in several stages, tasks."""
    c1 = crm.create("client", {"name": "ООО Ромашка", "email": "info@romashka.ru", "city": "Москва", "source": "site"})
    gone = crm.create("client", {"name": "Удалённый"})
    c2 = crm.create("client", {"name": "АО «Василёк», филиал", "city": "Казань", "phone": "+7 495 123-45-67"})
    crm.delete("client", gone["id"])
    p1 = crm.create("product", {"name": "Сервер", "price": "150 000,50"})
    p2 = crm.create("product", {"name": "Ноутбук", "price": "80000"})
    deals = crm.create_many(
        "deal",
        [
            {
                "title": "Поставка серверов",
                "amount": "120 000,50",
                "client": c1["id"],
                "products": [p1["id"], p2["id"]],
                "stage": "proposal",
            },
            {"title": "Ноутбуки;\nвторая строка", "amount": "500", "client": c2["id"], "products": [p2["id"]]},
            {"title": "Отказ", "client": c2["id"], "lost_reason": 'дорого, "очень"', "stage": "lost"},
        ],
        import_stages=True,
    )
    crm.create("task", {"title": "Позвонить", "subject": f"deal:{deals[0]['id']}", "due": "2024-05-01T10:30:00+03:00"})
    crm.create("task", {"title": "Встреча", "subject": f"client:{c2['id']}"})
    return {"clients": [c1, c2], "products": [p1, p2], "deals": deals}


# --------------------------------------------------------------------------- round trip


def test_round_trip_into_a_fresh_database(crm, fresh_url, tmp_path) -> None:
    fill(crm)
    files = {}
    for entity in ("client", "product", "deal", "task"):
        files[entity] = tmp_path / f"{entity}.csv"
        assert export_csv(crm, entity, files[entity]) == crm.count(entity)
    header = files["deal"].read_text(encoding="utf-8").splitlines()[0]
    assert header == "id,title,amount,lost_reason,client,products,owner,stage"

    fresh = metacrm.connect(CONTRACT, fresh_url)
    fresh.migrate()
    maps: dict[str, dict[int, int]] = {}
    for entity in ("client", "product", "deal", "task"):
        result = import_csv(fresh, entity, files[entity], import_stages=True, id_maps=maps)
        assert result.created == crm.count(entity) and not result.rejected
        maps[entity] = result.id_map
    assert maps["client"] != {k: k for k in maps["client"]}  # the gap renumbered the clients

    def translated(entity: str, record: dict) -> dict:
        out = {k: v for k, v in record.items() if k not in SYSTEM}
        if entity == "deal":
            out["client"] = maps["client"][record["client"]]
            out["products"] = sorted(maps["product"][p] for p in record["products"])
        if entity == "task" and record["subject"]:
            subject = record["subject"]
            out["subject"] = {"entity": subject["entity"], "id": maps[subject["entity"]][subject["id"]]}
        return out

    for entity in ("client", "product", "deal", "task"):
        before = [translated(entity, r) for r in crm.find(entity)]
        after = [{k: v for k, v in r.items() if k not in SYSTEM} for r in fresh.find(entity)]
        assert after == before, entity
    deal = fresh.find("deal", where="title = 'Поставка серверов'")[0]
    assert deal["amount"] == Decimal("120000.50") and deal["stage"] == "proposal"
    assert fresh.find("deal", where="stage = 'lost'")[0]["lost_reason"] == 'дорого, "очень"'
    task = fresh.find("task", where="title = 'Позвонить'")[0]
    assert task["due"].isoformat() == "2024-05-01T07:30:00+00:00"
    fresh.close()


def test_export_filters_orders_and_writes_to_streams(crm) -> None:
    fill(crm)
    out = io.StringIO()
    assert export_csv(crm, "deal", out, where="amount > 100", order_by="-amount") == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["title"] for r in rows] == ["Поставка серверов", "Ноутбуки;\nвторая строка"]
    assert rows[0]["amount"] == "120000.50" and rows[0]["stage"] == "proposal"
    assert len(rows[0]["products"].split(",")) == 2
    paged = io.StringIO()
    assert export_csv(crm, "client", paged, page_size=1) == 2  # keyset pages of one record
    assert [r["name"] for r in csv.DictReader(io.StringIO(paged.getvalue()))] == ["ООО Ромашка", "АО «Василёк», филиал"]
    for where, position in (("amount >", 9), ("colour = 1", 1)):  # positions in the text given
        with pytest.raises(metacrm.ExpressionError) as caught:
            export_csv(crm, "deal", io.StringIO(), where=where)
        assert caught.value.position == position and "metacrm_after" not in str(caught.value)


# --------------------------------------------------------------------------- links


def test_links_by_title_case_and_spaces_and_many(crm, tmp_path) -> None:
    data = fill(crm)
    c1, c2 = data["clients"]
    p1, p2 = data["products"]
    path = write(
        tmp_path / "deals.csv",
        "\ufefftitle;Amount;Client;products\n"
        f"Первая;120 000,50;ооо   ромашка ;Сервер, Ноутбук\n"
        f"Вторая;1,5;{c2['id']};{p1['id']}\n"
        "Третья;;АО «Василёк», филиал;\n",
    )
    result = import_csv(crm, "deal", path)
    assert result.created == 3 and not result.rejected
    first, second, third = (crm.get("deal", i) for i in result.ids)
    assert first["client"] == c1["id"] and first["products"] == sorted([p1["id"], p2["id"]])
    assert first["amount"] == Decimal("120000.50")
    assert second["client"] == c2["id"] and second["products"] == [p1["id"]] and second["amount"] == Decimal("1.50")
    assert third["client"] == c2["id"] and third["amount"] is None
    assert [(n.row, n.column, n.kind) for n in result.notes] == [(4, "products", "empty_link")]


def test_unknown_and_ambiguous_titles_reject_rows_by_line(crm, tmp_path) -> None:
    fill(crm)
    crm.create("client", {"name": "Двойник"})
    crm.create("client", {"name": "двойник"})
    path = write(
        tmp_path / "deals.csv",
        "title,client,products\n"
        "Хорошая,ООО Ромашка,Сервер\n"
        "Плохая,Рога и копыта,\n"
        "\n"
        "Двусмысленная,ДВОЙНИК,\n"
        "Без товара,ООО Ромашка,Сервер,Принтер\n",
    )
    before = snapshot(crm)
    with pytest.raises(ImportRefused) as info:
        import_csv(crm, "deal", path)
    assert snapshot(crm) == before
    exc = info.value
    assert isinstance(exc, metacrm.ValidationError)
    assert str(exc).startswith("deal: line 3, client: no client titled 'Рога и копыта' (and 2 more)")
    rejected = [(i.row, i.column, i.kind) for i in exc.result.rejected]
    assert rejected == [(3, "client", "unresolved"), (5, "client", "unresolved"), (6, None, "rejected")]
    assert "2 client records match 'ДВОЙНИК'" in exc.result.rejected[1].reason
    assert [i.index for i in exc.issues] == [3, 5, 6]
    assert exc.result.unresolved == {"client": {"Рога и копыта": 1, "ДВОЙНИК": 1}}


def test_many_link_with_an_unknown_part_and_near_matches(crm, tmp_path) -> None:
    fill(crm)
    path = write(tmp_path / "deals.csv", 'title,client,products\nA,ООО Ромашка,"Сервер,Ноут-бук"\n')
    with pytest.raises(ImportRefused, match="no product titled 'Ноут-бук'"):
        import_csv(crm, "deal", path)
    result = import_csv(crm, "deal", path, near_matches=True)
    assert result.created == 1
    assert [(n.kind, n.value) for n in result.notes] == [("near_match", "Ноут-бук")]
    assert "taken as product 'Ноутбук'" in result.notes[0].reason


def test_polymorphic_cells_name_existing_records(crm) -> None:
    deal = fill(crm)["deals"][0]
    bad = f"title,subject\nA,deal:{deal['id']}\nB,deal:999\nC,client\n"
    with pytest.raises(ImportRefused) as info:
        import_csv(crm, "task", io.StringIO(bad))
    assert [(i.row, i.kind, i.reason[:22]) for i in info.value.result.rejected] == [
        (3, "unresolved", "no deal with id 999"),
        (4, "rejected", "'client' does not name"),
    ]
    result = import_csv(crm, "task", io.StringIO(bad), skip_invalid=True)
    assert crm.get("task", result.ids[0])["subject"] == {"entity": "deal", "id": deal["id"]}


def test_self_links_by_title_and_by_file_id_and_cycles(db_url, tmp_path) -> None:
    crm = metacrm.connect(MAVEN, db_url)
    crm.migrate()
    path = write(
        tmp_path / "accounts.csv",
        "account,sector,subsidiary_of\nChild,retail,Parent\nParent,retail,\nGrandchild,retail,child\n",
    )
    result = import_csv(crm, "account", path)
    by_name = {r["name"]: r for r in crm.find("account")}
    assert by_name["Child"]["parent"] == by_name["Parent"]["id"]
    assert by_name["Grandchild"]["parent"] == by_name["Child"]["id"]
    assert result.ids == [by_name[n]["id"] for n in ("Child", "Parent", "Grandchild")]  # file order
    exported = tmp_path / "export.csv"
    export_csv(crm, "account", exported)
    other = metacrm.connect(MAVEN, f"sqlite:///{tmp_path / 'other.db'}")
    other.migrate()
    other.create("account", {"name": "Occupies id 1"})
    again = import_csv(other, "account", exported)  # parent ids refer to the file's id column
    assert again.renumbered
    names = {r["id"]: r["name"] for r in other.find("account")}
    assert {names[r["id"]]: names.get(r["parent"]) for r in other.find("account")} == {
        "Occupies id 1": None,
        "Child": "Parent",
        "Parent": None,
        "Grandchild": "Child",
    }
    cycle = write(tmp_path / "cycle.csv", "account,subsidiary_of\nA,B\nB,A\nC,A\nD,\n")
    with pytest.raises(ImportRefused) as info:
        import_csv(other, "account", cycle)
    assert [i.row for i in info.value.result.rejected] == [2, 3, 4]
    assert "cycle" in info.value.result.rejected[0].reason
    other.close()
    crm.close()


# --------------------------------------------------------------------------- all or nothing, reports


BAD_CLIENTS = (
    "name,email,city,source\n"
    "Альфа,alpha@example.com,Москва,site\n"
    ",nobody@example.com,Тверь,call\n"  # line 3: name is required
    "Гамма,not-an-email,Омск,Site\n"  # line 4: bad e-mail
    "Дельта,alpha@example.com,Пермь,referral\n"  # line 5: e-mail used on line 2
    "Эпсилон,eps@example.com,Сочи,radio\n"  # line 6: not an option
    "Зета,zeta@example.com,Тула,\n"
)


def test_a_bad_row_imports_nothing(crm, tmp_path) -> None:
    fill(crm)
    path = write(tmp_path / "clients.csv", BAD_CLIENTS)
    before = snapshot(crm)
    count = crm.count("client")
    with pytest.raises(ImportRefused) as info:
        import_csv(crm, "client", path, report_path=tmp_path / "report.csv")
    assert crm.count("client") == count and snapshot(crm) == before
    assert info.value.result.rejected_rows == [3, 4, 5, 6]
    assert str(info.value).endswith("(and 3 more); nothing was imported")
    assert (tmp_path / "report.csv").exists()


def test_a_unique_value_already_stored_rejects_the_row(crm, tmp_path) -> None:
    fill(crm)
    path = write(tmp_path / "clients.csv", "name,email\nНовый,info@romashka.ru\n")
    with pytest.raises(ImportRefused, match=r"line 2, email: 'info@romashka.ru' is already used by client \d+"):
        import_csv(crm, "client", path)


def test_skip_invalid_imports_the_good_rows_and_reports_the_rest(crm, tmp_path) -> None:
    path = write(tmp_path / "clients.csv", BAD_CLIENTS)
    report = tmp_path / "report.csv"
    result = import_csv(crm, "client", path, skip_invalid=True, report_path=report)
    assert result.created == 2 and result.rejected_rows == [3, 4, 5, 6]
    assert [r["name"] for r in crm.find("client")] == ["Альфа", "Зета"]
    with open(report, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["row", "kind", "column", "value", "reason", "name", "email", "city", "source"]
    assert [(r[0], r[2], r[3]) for r in rows[1:]] == [
        ("3", "name", ""),
        ("4", "email", "not-an-email"),
        ("5", "email", "alpha@example.com"),
        ("6", "source", "radio"),
    ]
    assert rows[1][5:] == ["", "nobody@example.com", "Тверь", "call"]
    assert "is required" in rows[1][4] and "already used on line 2" in rows[3][4]


def test_unknown_column_names_it_and_lists_the_fields(crm, tmp_path) -> None:
    path = write(tmp_path / "clients.csv", "name,emial,Город\nАльфа,a@example.com,Москва\n")
    with pytest.raises(metacrm.ValidationError) as info:
        import_csv(crm, "client", path)
    message = str(info.value)
    assert "unknown column 'emial' (did you mean 'email'?)" in message and "name, email, phone, city, source" in message
    assert crm.count("client") == 0
    result = import_csv(crm, "client", path, mapping={"emial": "email", "Город": ""})
    assert crm.get("client", result.ids[0])["email"] == "a@example.com"
    with pytest.raises(metacrm.ValidationError, match="mapping names column 'nope'"):
        import_csv(crm, "client", path, mapping={"nope": "name"})


def test_columns_match_labels_and_a_stage_column_needs_import_stages(db_url, tmp_path) -> None:
    crm = metacrm.connect(MAVEN, db_url)
    crm.migrate()
    path = write(
        tmp_path / "opps.csv", "Opportunity ID;Close-Value;Engage date;stage\nX1;1 200,50;31.01.2024;Engaging\n"
    )
    with pytest.raises(metacrm.ValidationError, match="import_stages=True"):
        import_csv(crm, "opportunity", path)
    result = import_csv(crm, "opportunity", path, import_stages=True)
    record = crm.get("opportunity", result.ids[0])
    assert record["close_value"] == Decimal("1200.50") and str(record["engage_date"]) == "2024-01-31"
    assert record["stage"] == "engaging"
    bad = write(tmp_path / "bad.csv", "opportunity_id,stage\nX2,Negotiation\n")
    with pytest.raises(ImportRefused, match="'Negotiation' is not a stage of pipeline"):
        import_csv(crm, "opportunity", bad, import_stages=True)
    crm.close()


def test_files_in_other_shapes(crm, tmp_path) -> None:
    with pytest.raises(metacrm.NotFound):
        import_csv(crm, "client", tmp_path / "missing.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("name\nCaf\xe9\n".encode("latin-1"))
    with pytest.raises(metacrm.ValidationError, match="not UTF-8"):
        import_csv(crm, "client", latin)
    with pytest.raises(metacrm.ValidationError, match="is empty"):
        import_csv(crm, "client", write(tmp_path / "empty.csv", ""))
    result = import_csv(crm, "client", io.BytesIO("\ufeffname\tcity\nАльфа\tМосква\n".encode()))
    assert crm.get("client", result.ids[0])["city"] == "Москва"
    with pytest.raises(ImportRefused, match="the row has 3 cells"):
        import_csv(crm, "client", io.StringIO("name,city\nБета,Омск,лишнее\n"))


# --------------------------------------------------------------------------- command line


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_cli_import_and_export(db_url, tmp_path) -> None:
    opts = ["--model", str(CONTRACT), "--db", db_url]
    assert run("migrate", *opts).exit_code == 0
    clients = write(tmp_path / "clients.csv", "name,city\nАльфа,Москва\nБета,Омск\n")
    result = run("import", "client", str(clients), *opts)
    assert result.exit_code == 0, result.output
    assert result.stdout == "imported 2 client records; 0 rejected\n"
    deals = write(tmp_path / "deals.csv", "title,client,amount\nA,Альфа,10\nB,Гамма,x\nC,Бета,5\n")
    refused = run("import", "deal", str(deals), *opts)
    assert refused.exit_code == 1
    report = tmp_path / "deals.report.csv"  # a refused import writes the report too
    assert refused.stderr == (
        f"error: deal: line 3, client: no client titled 'Гамма' (and 1 more); nothing was imported (report: {report})\n"
    )
    assert report.exists()
    report.unlink()
    skipped = run("import", "deal", str(deals), "--skip-invalid", *opts)
    assert skipped.exit_code == 0, skipped.output
    assert skipped.stdout.startswith("imported 2 deal records; 1 rejected (report: ")
    assert (tmp_path / "deals.report.csv").exists()
    unknown = run("import", "client", str(write(tmp_path / "x.csv", "nam\nA\n")), *opts)
    assert unknown.exit_code == 1 and "unknown column 'nam'" in unknown.stderr
    mapped = run(
        "import",
        "client",
        str(write(tmp_path / "y.csv", "nam,junk\nГамма,1\n")),
        "--map",
        "nam=name",
        "--map",
        "junk=",
        "--format",
        "json",
        *opts,
    )
    assert mapped.exit_code == 0, mapped.output
    assert json.loads(mapped.stdout)["created"] == 1
    assert run("import", "client", str(clients), "--map", "oops", *opts).exit_code == 2
    assert run("import", "nosuch", str(clients), *opts).exit_code == 1
    exported = run("export", "deal", "--where", "amount > 1", "--order-by", "-amount", *opts)
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [(r["title"], r["amount"], r["stage"]) for r in rows] == [("A", "10.00", "new"), ("C", "5.00", "new")]
    out = tmp_path / "out.csv"
    assert run("export", "client", "-o", str(out), *opts).exit_code == 0
    assert out.read_text(encoding="utf-8").splitlines()[0] == "id,name,email,phone,city,source,owner"
    assert run("export", "deal", "--where", "nope = 1", *opts).exit_code == 1


def test_derived_columns_are_exported_and_ignored_on_import(db_url, tmp_path) -> None:
    """An export carries computed and roll-up values; importing it back does not refuse
    them (they cannot be set) but recomputes them in the new database."""
    model = Path(__file__).parent.parent / "examples" / "trade.yaml"
    crm = metacrm.connect(model, db_url)
    crm.migrate()
    c = crm.create("client", {"name": "ООО Ромашка"})
    crm.create("deal", {"title": "Поставка", "amount": "1000", "discount": "10", "client": c["id"]})
    path = tmp_path / "client.csv"
    export_csv(crm, "client", path)
    header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert "open_deals" in header and "won_total" in header
    crm.delete("deal", crm.find("deal")[0]["id"])
    crm.delete("client", c["id"])
    result = import_csv(crm, "client", path)
    assert result.created == 1 and not result.rejected
    back = crm.find("client")[0]
    assert back["open_deals"] == 0 and back["won_total"] == Decimal("0")  # recomputed, not read from the file
    crm.close()


def test_a_polymorphic_cell_of_no_record_id_or_target_is_left_to_the_validator(crm) -> None:
    # (killed mutation survivor of csv_io's link_value: only "target:number" is looked up)
    text = "title,subject\nA,deal:abc\nB,ghost:5\n"
    before = snapshot(crm)
    with pytest.raises(ImportRefused) as info:
        import_csv(crm, "task", io.StringIO(text))
    assert [(i.row, i.column, i.kind, i.reason) for i in info.value.result.rejected] == [
        (2, "subject", "rejected", "'abc' is not a record id; give the id of a deal record (a whole number)"),
        (3, "subject", "rejected", "'ghost:5' links to 'ghost', which this link cannot reach; targets: deal, client"),
    ]
    assert snapshot(crm) == before


def test_a_many_link_cell_naming_one_title_with_a_comma_links_that_record(crm) -> None:
    client = crm.create("client", {"name": "Client"})["id"]
    cable = crm.create("product", {"name": "Кабель, 2 м"})["id"]
    server = crm.create("product", {"name": "Сервер"})["id"]
    text = f'title,client,products\nOne,{client},"Кабель, 2 м"\nTwo,{client},"Сервер, {cable}"\n'
    result = import_csv(crm, "deal", io.StringIO(text))
    assert [sorted(crm.get("deal", i)["products"]) for i in result.ids] == [[cable], sorted([server, cable])]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("title,due,title", "task: <stream>: column 'title' appears 2 times in the header"),
        (
            "title,foo,bar",
            "task: <stream>: unknown column 'foo'; task fields: title, due, subject; map the column to a field, "
            "or to '' to ignore it (and 1 more)",
        ),
    ],
)
def test_a_header_that_cannot_be_placed_is_refused_with_a_count_of_the_other_problems(
    crm, header: str, message: str
) -> None:
    before = snapshot(crm)
    with pytest.raises(metacrm.ValidationError) as info:
        import_csv(crm, "task", io.StringIO(header + "\nA,2026-01-01,B\n"))
    assert str(info.value) == message
    assert snapshot(crm) == before


def test_a_stage_column_without_import_stages_does_not_stop_the_mapping(crm) -> None:
    with pytest.raises(metacrm.ValidationError) as info:
        import_csv(crm, "deal", io.StringIO("title,stage,foo\nA,won,B\n"))
    assert str(info.value) == (
        "deal: <stream>: column 'stage' holds the stage: importing stages needs --with-stages "
        "(import_stages=True in Python); or map the column to '' to ignore it (and 1 more)"
    )


def test_a_value_under_a_column_with_no_name_names_the_column_by_its_place(crm) -> None:
    text = "title,,due\nA,x,2026-01-02\nB,,2026-03-04\n"  # (the column after it is read)
    result = import_csv(crm, "task", io.StringIO(text), skip_invalid=True)
    assert [(i.row, i.column, i.value, i.reason) for i in result.rejected] == [
        (2, "column 2", "x", "a value under a column with no name in the header")
    ]
    [record] = [crm.get("task", i) for i in result.ids]
    assert (record["title"], record["due"].date().isoformat()) == ("B", "2026-03-04")
