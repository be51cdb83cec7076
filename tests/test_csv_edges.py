"""CSV imports at their edges (killed survivors of tools/mutation.py on io/csv_io.py): rejections
that travel down a chain of linked rows, a cycle's message, progress across levels, rows refused
only at write under skip_invalid, `warn` duplicates noted on their row, the uniqueness checks of
the file before any write, the refusal's one-line message, a chain rejected in a round that
writes nothing, a rejected cell shown without its spaces, progress every 500 records, a computed
column ignored, links to an entity without a title, a mapping to a missing field; on SQLite and
PostgreSQL."""

from __future__ import annotations

import pytest
from conftest import dump_database

import metacrm
from metacrm.io import ImportRefused, import_csv

MODEL = """\
metacrm: 1
name: edges
entities:
  account:
    title: name
    fields:
      name: {type: string, required: true}
      code: {type: string, unique: true}
      email: {type: email, unique: true}
      billing: {type: email}
      contact: {type: email}
      number: {type: string}
      region: {type: string}
    links:
      parent: {to: account, inverse: subsidiaries, on_delete: set_null}
      peers: {to: account, many: true}
    unique:
      - [number, region]
    duplicates:
      - {match: email, field: billing, action: block}
      - {match: email, field: contact, action: warn}
"""


@pytest.fixture
def crm(db_url, tmp_path):
    path = tmp_path / "edges.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    crm.create(
        "account",
        {
            "name": "Stored",
            "email": "taken@stored.example",
            "billing": "info@stored.example",
            "contact": "hello@stored.example",
        },
    )
    yield crm
    crm.close()


def run(crm, tmp_path, text: str, **options):
    path = tmp_path / "accounts.csv"
    path.write_text(text, encoding="utf-8")
    return import_csv(crm, "account", path, **options)


def names(crm) -> list[str]:
    return sorted(r["name"] for r in crm.find("account"))


def test_a_rejection_travels_down_a_chain_of_linked_rows(crm, tmp_path) -> None:
    # C links to B links to A; A is rejected: B for linking to A, then C for linking to B
    text = "name,email,parent\nA,not-an-email,\nB,,A\nC,,B\nD,,\n"
    result = run(crm, tmp_path, text, skip_invalid=True)
    chain = [(r.row, r.column, r.reason) for r in result.rejected if r.row != 2]
    assert chain == [
        (3, "parent", "links to line 2, which is rejected"),
        (4, "parent", "links to line 3, which is rejected"),
    ]
    assert [r.row for r in result.rejected if r.row == 2] == [2]
    assert names(crm) == ["D", "Stored"]


def test_a_cycle_names_its_first_ten_lines(crm, tmp_path) -> None:
    n = 12  # row i links to row i+1, the last to the first: lines 2..13
    rows = [f"N{i},N{(i + 1) % n}" for i in range(n)]
    before = dump_database(crm.engine)
    with pytest.raises(ImportRefused) as info:
        run(crm, tmp_path, "name,parent\n" + "\n".join(rows) + "\n")
    reasons = {(r.column, r.reason) for r in info.value.result.rejected}
    assert reasons == {("parent", "rows link to each other in a cycle (lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)")}
    assert len(info.value.result.rejected) == n
    assert dump_database(crm.engine) == before


def test_progress_counts_every_level_to_the_total(crm, tmp_path) -> None:
    calls: list[tuple[int, int]] = []
    text = "name,parent\nP1,\nP2,\nC1,P1\nP3,\nC2,P2\n"  # level 1: P1 P2 P3; level 2: C1 C2
    result = run(crm, tmp_path, text, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 5), (3, 5), (5, 5)]
    assert len(result.ids) == 5


def test_rows_refused_at_write_are_skipped_with_what_links_to_them(crm, tmp_path) -> None:
    # level 1: Parent; level 2: Child (refused by the block rule when written) and Sibling;
    # level 3: Grandchild, linking to Child, which was not imported
    text = "name,billing,parent\nChild,INFO@stored.example,Parent\nParent,,\nGrandchild,,Child\nSibling,,Parent\n"
    result = run(crm, tmp_path, text, skip_invalid=True)
    assert [(r.row, r.field) for r in result.rejected] == [(2, "billing"), (4, "parent")]
    assert result.rejected[1].reason == "links to line 2, which was not imported"
    assert names(crm) == ["Parent", "Sibling", "Stored"]
    by_name = {r["name"]: r for r in crm.find("account")}
    assert result.ids == [by_name["Parent"]["id"], by_name["Sibling"]["id"]]
    assert by_name["Sibling"]["parent"] == by_name["Parent"]["id"]


def test_a_warn_duplicate_is_imported_and_noted_on_its_row(crm, tmp_path) -> None:
    stored = crm.find("account")[0]["id"]
    result = run(crm, tmp_path, "name,contact\nDup,HELLO@stored.example\nFresh,fresh@x.example\n")
    assert names(crm) == ["Dup", "Fresh", "Stored"]
    assert [(n.row, n.column, n.field, n.value, n.kind) for n in result.notes] == [
        (2, "contact", "contact", "HELLO@stored.example", "duplicate")
    ]
    assert result.notes[0].reason == f"duplicate of account {stored} (rule: email on contact, warn)"
    assert result.rejected == []


def test_a_refusal_counts_the_other_rejected_rows(crm, tmp_path) -> None:
    with pytest.raises(ImportRefused) as one:
        run(crm, tmp_path, "name,email\nA,bad\nB,b@x.example\n")
    assert "more)" not in str(one.value)
    assert str(one.value).startswith("account: line 2, email: ")
    assert str(one.value).endswith("; nothing was imported")
    with pytest.raises(ImportRefused) as two:
        run(crm, tmp_path, "name,email\nA,bad\nB,worse\n")
    assert " (and 1 more); nothing was imported" in str(two.value)


def test_a_row_rejected_for_its_link_does_not_claim_its_unique_value(crm, tmp_path) -> None:
    text = "name,email,parent\nA,same@x.example,Nobody\nB,same@x.example,\n"
    result = run(crm, tmp_path, text, skip_invalid=True)
    assert [r.row for r in result.rejected] == [2]
    assert names(crm) == ["B", "Stored"]


def test_rows_without_a_unique_value_do_not_stop_the_check(crm, tmp_path) -> None:
    before = dump_database(crm.engine)
    with pytest.raises(ImportRefused) as info:
        run(crm, tmp_path, "name,email\nX,\nY,dup@x.example\nZ,dup@x.example\n")
    assert [(r.row, r.column, r.reason) for r in info.value.result.rejected] == [
        (4, "email", "'dup@x.example' is already used on line 3")
    ]
    assert dump_database(crm.engine) == before


def test_a_composite_key_repeated_in_the_file_is_rejected_on_its_first_column(crm, tmp_path) -> None:
    with pytest.raises(ImportRefused) as info:
        run(crm, tmp_path, "name,region,number\nA,north,7\nB,north,7\n")
    [issue] = info.value.result.rejected
    assert (issue.row, issue.column, issue.field) == (3, "number", "number+region")


def test_a_stored_unique_value_is_found_before_any_write_when_another_key_is_empty(crm, tmp_path) -> None:
    # `code` (the first unique field) is empty on every row; `email` is still checked against
    # the stored records before any write
    stored = crm.find("account")[0]["id"]
    with pytest.raises(ImportRefused) as info:
        run(crm, tmp_path, "name,email\nA,taken@stored.example\n")
    [issue] = info.value.result.rejected
    assert (issue.row, issue.column) == (2, "email")
    assert issue.reason == f"'taken@stored.example' is already used by account {stored}"


def test_a_many_link_cell_names_a_stored_record_and_a_row_of_the_file(crm, tmp_path) -> None:
    run(crm, tmp_path, 'name,peers\nLinked,"Stored, Later"\nLater,\n')
    by_name = {r["name"]: r for r in crm.find("account")}
    assert by_name["Linked"]["peers"] == [by_name["Stored"]["id"], by_name["Later"]["id"]]


def test_a_row_linking_to_several_rejected_rows_names_the_first(crm, tmp_path) -> None:
    text = 'name,email,peers\nA,bad,\nB,worse,\nX,,"A, B"\nY,,\n'
    result = run(crm, tmp_path, text, skip_invalid=True)
    assert [(r.row, r.column, r.reason) for r in result.rejected if r.row == 4] == [
        (4, "peers", "links to line 2, which is rejected")
    ]
    assert names(crm) == ["Stored", "Y"]


def test_a_chain_rejected_with_nothing_else_to_write_is_not_called_a_cycle(crm, tmp_path) -> None:
    # C comes before B: in the first round C waits for B, B is rejected for linking to A, and
    # no row can be written; in the next C is rejected for linking to B, not as a cycle
    text = "name,email,parent\nA,not-an-email,\nC,,B\nB,,A\n"
    before = dump_database(crm.engine)
    result = run(crm, tmp_path, text, skip_invalid=True)
    assert sorted((r.row, r.column, r.reason) for r in result.rejected if r.row != 2) == [
        (3, "parent", "links to line 4, which is rejected"),
        (4, "parent", "links to line 2, which is rejected"),
    ]
    assert result.ids == []
    assert dump_database(crm.engine) == before


def test_a_rejected_value_is_shown_as_the_cell_without_its_spaces(crm, tmp_path) -> None:
    with pytest.raises(ImportRefused) as info:
        run(crm, tmp_path, 'name,email\nA,"  not-an-email "\n')
    [issue] = info.value.result.rejected
    assert (issue.row, issue.column, issue.value) == (2, "email", "not-an-email")
    assert issue.reason.startswith("'  not-an-email ' is not a valid e-mail address")


def test_progress_is_called_every_500_records_and_at_the_end_of_each_level(crm, tmp_path) -> None:
    calls: list[tuple[int, int]] = []
    rows = [f"R{i}," for i in range(1001)] + ["C1,R0", "C2,R1"]  # level 1: 1,001 rows; level 2: 2
    result = run(crm, tmp_path, "name,parent\n" + "\n".join(rows) + "\n", progress=lambda *a: calls.append(a))
    assert calls == [(0, 1003), (500, 1003), (1000, 1003), (1001, 1003), (1003, 1003)]
    assert len(result.ids) == 1003


LINES = """\
metacrm: 1
name: lines
entities:
  part:
    fields:
      size: {type: integer}
  line:
    title: name
    fields:
      name: {type: string, required: true}
      qty: {type: integer}
      price: {type: money}
      total: {type: money, formula: qty * price}
    links:
      part: {to: part}
"""


@pytest.fixture
def lines(db_url, tmp_path):
    path = tmp_path / "lines.yaml"
    path.write_text(LINES, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    yield crm
    crm.close()


def test_a_computed_column_is_ignored_and_the_columns_after_it_are_read(lines, tmp_path) -> None:
    part = lines.create("part", {"size": 3})["id"]
    path = tmp_path / "lines.csv"
    path.write_text(f"name,total,qty,price,part\nA,999,2,3.50,{part}\n", encoding="utf-8")
    [new] = import_csv(lines, "line", path).ids
    record = lines.get("line", new)
    assert (record["qty"], str(record["price"]), str(record["total"]), record["part"]) == (2, "3.50", "7.00", part)


def test_a_link_to_an_entity_without_a_title_takes_ids_only(lines, tmp_path) -> None:
    part = lines.create("part", {"size": 3})["id"]
    path = tmp_path / "lines.csv"
    path.write_text(f"name,part\nA,{part}\nB,abc\nC,{part + 76}\n", encoding="utf-8")
    before = dump_database(lines.engine)
    with pytest.raises(ImportRefused) as info:
        import_csv(lines, "line", path)
    assert [(r.row, r.kind, r.reason) for r in info.value.result.rejected] == [
        (3, "unresolved", "no part with id 'abc' (part has no title field to look names up)"),
        (4, "unresolved", f"no part with id '{part + 76}' (part has no title field to look names up)"),
    ]
    assert dump_database(lines.engine) == before


def test_a_column_mapped_to_a_missing_field_is_refused_with_a_hint(lines, tmp_path) -> None:
    path = tmp_path / "lines.csv"
    path.write_text("nme,qty,foo\nA,1,2\n", encoding="utf-8")  # foo: a second problem, reported too
    with pytest.raises(metacrm.ValidationError) as info:
        import_csv(lines, "line", path, mapping={"nme": "nmae"})
    assert str(info.value) == (
        f"line: {path}: column 'nme' is mapped to 'nmae', which line does not have (did you mean 'name'?); "
        "fields: name, qty, price, total, part (and 1 more)"
    )
    assert lines.find("line") == []


def test_a_title_resolves_beside_an_id_that_names_no_record(crm, tmp_path) -> None:
    stored = crm.find("account")[0]["id"]
    result = run(crm, tmp_path, f"name,parent\nA,Stored\nB,{stored + 998}\n", skip_invalid=True)
    assert [(r.row, r.kind) for r in result.rejected] == [(3, "unresolved")]
    assert [crm.get("account", i)["parent"] for i in result.ids] == [stored]


def test_a_near_match_is_noted_with_the_id_of_a_record_or_the_line_of_a_row(crm, tmp_path) -> None:
    stored = crm.find("account")[0]["id"]
    result = run(crm, tmp_path, "name,parent\nA,S-tored\nB,Par ent\nParent,\n", near_matches=True)
    assert [n.reason for n in result.notes if n.kind == "near_match"] == [
        f"near match: 'S-tored' taken as account 'Stored' (id {stored})",
        "near match: 'Par ent' taken as the account of line 4",
    ]
    assert len(result.ids) == 3


def test_a_column_mapped_to_nothing_does_not_stop_the_mapping(crm, tmp_path) -> None:
    result = run(crm, tmp_path, "skip,name,region\nx,A,North\n", mapping={"skip": ""})
    [record] = [crm.get("account", i) for i in result.ids]
    assert (record["name"], record["region"]) == ("A", "North")


def test_two_columns_filling_one_field_are_refused_with_the_other_problems(crm, tmp_path) -> None:
    with pytest.raises(metacrm.ValidationError) as info:
        run(crm, tmp_path, "name,Name,foo\nA,B,C\n")
    assert str(info.value).startswith("account: ")
    assert str(info.value).endswith(": columns 'name' and 'Name' both fill 'name' (and 1 more)")
    assert names(crm) == ["Stored"]


def test_every_unknown_part_of_a_many_link_cell_is_reported(crm, tmp_path) -> None:
    with pytest.raises(ImportRefused) as info:
        run(crm, tmp_path, 'name,peers\nA,"Nobody, Stored, Noone"\n')
    assert [(r.row, r.value, r.reason) for r in info.value.result.rejected] == [
        (2, "Nobody", "no account titled 'Nobody'"),
        (2, "Noone", "no account titled 'Noone'"),
    ]


def test_an_empty_cell_of_an_optional_link_is_noted(crm, tmp_path) -> None:
    result = run(crm, tmp_path, "name,parent,peers\nA,,\n")
    assert [(n.row, n.column, n.kind, n.reason) for n in result.notes] == [
        (2, "parent", "empty_link", "no account (empty cell)"),
        (2, "peers", "empty_link", "no account (empty cell)"),
    ]
    assert len(result.ids) == 1


def test_an_unplaced_column_lists_the_first_40_fields(db_url, tmp_path) -> None:
    fields = "".join(f"      f{n:02}: {{type: string}}\n" for n in range(1, 42))  # 41 fields
    path = tmp_path / "wide.yaml"
    path.write_text(f"metacrm: 1\nname: wide\nentities:\n  wide:\n    fields:\n{fields}", encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    csv_path = tmp_path / "wide.csv"
    csv_path.write_text("f01,nope\nA,B\n", encoding="utf-8")
    with pytest.raises(metacrm.ValidationError) as info:
        import_csv(crm, "wide", csv_path)
    shown = ", ".join(f"f{n:02}" for n in range(1, 41))
    assert f"wide fields: {shown}, ... (1 more);" in str(info.value)
    crm.close()
