"""A user's own settings (runtime/preferences.py): kept per login, private, JSON, bounded."""

from pathlib import Path

import pytest
from sqlalchemy import inspect

import metacrm
from metacrm.errors import ValidationError
from metacrm.runtime.preferences import preference, preferences, set_preference

TRADE = Path(__file__).parent.parent / "examples" / "trade.yaml"


@pytest.fixture
def crm(db_url):
    crm = metacrm.connect(TRADE, db_url)
    crm.migrate()
    crm.add_user("ann", roles=["manager"])
    crm.add_user("bob", roles=["manager"])
    return crm


def test_each_user_keeps_their_own(crm):
    ann, bob = crm.as_user("ann"), crm.as_user("bob")
    assert preferences(ann) == {}
    set_preference(ann, "list.deal.columns", ["title", "client", "amount"])
    set_preference(ann, "locale", "ru")
    set_preference(bob, "locale", "en")
    assert preferences(ann) == {"list.deal.columns": ["title", "client", "amount"], "locale": "ru"}
    assert preference(bob, "locale") == "en"
    assert preference(bob, "list.deal.columns", ["title"]) == ["title"]
    set_preference(ann, "locale", "en")  # replaced, not added
    assert preference(ann, "locale") == "en"
    set_preference(ann, "locale", None)  # removed
    assert "locale" not in preferences(ann)
    assert preferences(crm) == {}  # the system user has none


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("Bad Key", 1, "is not a key"),
        ("x" * 101, 1, "is not a key"),
        ("columns", {1, 2}, "must be JSON"),
        ("columns", "x" * 20_000, "at most 10000"),
    ],
)
def test_bad_settings_are_refused_and_nothing_is_stored(crm, key, value, message):
    ann = crm.as_user("ann")
    with pytest.raises(ValidationError, match=message):
        set_preference(ann, key, value)
    assert preferences(ann) == {}


def test_the_system_user_cannot_store_settings(crm):
    with pytest.raises(ValidationError, match="system user"):
        set_preference(crm, "locale", "ru")


def test_an_older_database_gets_the_table_on_first_write(crm):
    table = crm.storage.preference_table
    with crm.engine.begin() as conn:
        table.drop(conn)
    ann = crm.as_user("ann")
    assert preferences(ann) == {}
    set_preference(ann, "tz", "Europe/Moscow")
    assert table.name in set(inspect(crm.engine).get_table_names())
    assert preference(ann, "tz") == "Europe/Moscow"
