"""A migration that the database would refuse is refused before anything is written: a table
made by hand under the name of a new entity makes the plan's rehearsal (SQLite) or the apply's
transaction (PostgreSQL) fail, and `migrate` raises MigrationError naming the table, with the
database as it was; on both dialects."""

from __future__ import annotations

import pytest
from conftest import dump_database
from sqlalchemy import text

import metacrm
from metacrm.runtime.engine import make_engine

OLD = "metacrm: 1\nname: r\nentities:\n  client:\n    fields:\n      name: {type: string}\n"
NEW = OLD + "      city: {type: string, index: true}\n  product:\n    fields:\n      name: {type: string}\n"


def test_a_migration_the_database_would_refuse_changes_nothing(db_url, tmp_path) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(OLD, encoding="utf-8")
    new.write_text(NEW, encoding="utf-8")
    crm = metacrm.connect(old, db_url)
    crm.migrate()
    crm.create("client", {"name": "ООО Ромашка"})
    crm.close()
    engine = make_engine(db_url)
    with engine.begin() as conn:  # made by hand, outside metacrm
        conn.execute(text("CREATE TABLE product (x integer)"))
    before = dump_database(engine)
    crm = metacrm.connect(new, db_url)
    if db_url.startswith("sqlite"):  # the dry run rehearses the steps on a copy of the schema
        with pytest.raises(
            metacrm.MigrationError, match=r"the migration would fail on sqlite: .*product already exists"
        ):
            crm.migrate(dry_run=True)
    with pytest.raises(metacrm.MigrationError, match="product"):
        crm.migrate()
    assert dump_database(engine) == before
    with pytest.raises(metacrm.MigrationError, match="metacrm migrate"):
        crm.find("client")  # the database still holds the old model
    crm.close()
    engine.dispose()
