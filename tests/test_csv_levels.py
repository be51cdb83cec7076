"""A CSV import is one transaction over all its levels (rows linking to earlier rows of the same
file are written after them): a refusal that only the write can see (a duplicate rule, a
composite unique key against stored records) in a later level undoes the earlier levels too.
The whole database is dumped before and after, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from conftest import dump_database

import metacrm
from metacrm.io import ImportRefused, import_csv

MODEL = """\
metacrm: 1
name: levels
entities:
  account:
    title: name
    fields:
      name: {type: string, required: true}
      code: {type: string}
      city: {type: string}
      email: {type: email}
    links:
      parent: {to: account, inverse: subsidiaries, on_delete: set_null}
    unique:
      - [code, city]
    duplicates:
      - {match: email, field: email, action: block}
"""


@pytest.fixture
def crm(db_url, tmp_path):
    path = tmp_path / "levels.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    crm.create("account", {"name": "Stored", "code": "S-1", "city": "Berlin", "email": "info@stored.example"})
    yield crm
    crm.close()


# Level 1: Parent (no link to the file); level 2: Child, linking to Parent by title. Only the
# child's row is refused, and only when written: pre-validation checks neither duplicate rules
# nor composite keys against the stored records.
REFUSED_AT_WRITE = {
    "block duplicate rule": "name,email,city,parent\nChild,INFO@stored.example,Paris,Parent\nParent,,Paris,\n",
    "composite unique key": "name,code,city,parent\nChild,S-1,Berlin,Parent\nParent,P-1,Paris,\n",
}


@pytest.mark.parametrize("case", sorted(REFUSED_AT_WRITE))
def test_a_later_level_refused_at_write_undoes_the_earlier_levels(crm, tmp_path, case) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text(REFUSED_AT_WRITE[case], encoding="utf-8")
    before = dump_database(crm.engine)
    assert before["account"] and "account__" not in before  # the dump sees the stored account
    with pytest.raises(metacrm.ValidationError) as info:
        import_csv(crm, "account", path)
    if case == "block duplicate rule":  # reported on its row
        assert isinstance(info.value, ImportRefused)
        assert [(r.row, r.field) for r in info.value.result.rejected] == [(2, "email")]
        assert str(info.value).endswith("nothing was imported")
    else:  # the database's constraint, translated
        assert "account.code+city: code, city is already used" in str(info.value)
    assert dump_database(crm.engine) == before
    assert [r["name"] for r in crm.find("account")] == ["Stored"]


def test_the_same_file_without_the_refused_row_imports_in_two_levels(crm, tmp_path) -> None:
    """The control: the refusal above comes from the child's row, not from the levels."""
    path = tmp_path / "accounts.csv"
    path.write_text("name,code,city,parent\nChild,C-1,Paris,Parent\nParent,P-1,Paris,\n", encoding="utf-8")
    result = import_csv(crm, "account", path)
    by_name = {r["name"]: r for r in crm.find("account")}
    assert by_name["Child"]["parent"] == by_name["Parent"]["id"]
    assert result.ids == [by_name["Child"]["id"], by_name["Parent"]["id"]]  # file order
