"""Deletes follow on_delete through single, self, many and polymorphic links, decided before
any row is touched: a restrict anywhere in the closure refuses the whole delete."""

from __future__ import annotations

from pathlib import Path

import pytest

import metacrm

MODEL = Path(__file__).parent / "fixtures" / "valid" / "deletes.yaml"


@pytest.fixture
def crm(db_url):
    crm = metacrm.connect(MODEL, db_url)
    crm.migrate()
    yield crm
    crm.close()


def counts(crm) -> dict:
    return {name: crm.count(name) for name in crm.model.entities}


def test_cascade_set_null_and_polymorphic(crm) -> None:
    root = crm.create("ticket", {"title": "root"})
    child = crm.create("ticket", {"title": "child", "parent": root["id"]})
    grandchild = crm.create("ticket", {"title": "grandchild", "parent": child["id"]})
    other = crm.create("ticket", {"title": "other"})
    c1 = crm.create("comment", {"body": "on child", "ticket": child["id"]})
    crm.create("comment", {"body": "on other", "ticket": other["id"]})
    w = crm.create("watcher", {"name": "Ирина", "ticket": grandchild["id"]})
    crm.create("note", {"text": "about comment", "about": f"comment:{c1['id']}"})
    crm.create("note", {"text": "about other", "about": f"ticket:{other['id']}"})
    pin = crm.create("pin", {"label": "p", "about": f"ticket:{grandchild['id']}"})
    crm.create("tag", {"name": "t", "tickets": [grandchild["id"], other["id"]]})

    deleted = crm.delete("ticket", root["id"])
    assert deleted["ticket"] == sorted([root["id"], child["id"], grandchild["id"]])
    assert deleted["comment"] == [c1["id"]]
    assert deleted["note"] and len(deleted["note"]) == 1  # the note about the cascaded comment
    assert crm.get("watcher", w["id"])["ticket"] is None  # set_null
    assert crm.get("pin", pin["id"])["about"] is None  # polymorphic set_null
    assert crm.find("tag")[0]["tickets"] == [other["id"]]  # join rows of deleted tickets removed
    assert counts(crm) == {"ticket": 1, "comment": 1, "watcher": 1, "note": 1, "pin": 1, "tag": 1, "lock": 0}


def test_restrict_anywhere_refuses_everything(crm) -> None:
    root = crm.create("ticket", {"title": "root"})
    child = crm.create("ticket", {"title": "child", "parent": root["id"]})
    crm.create("comment", {"body": "c", "ticket": child["id"]})
    crm.create("lock", {"name": "держит", "ticket": child["id"]})
    before = counts(crm)
    with pytest.raises(metacrm.ValidationError, match=r"ticket \d+ is linked from lock \d+ through lock.ticket"):
        crm.delete("ticket", root["id"])
    assert counts(crm) == before


def test_links_emptied_by_a_delete_are_journaled(crm) -> None:
    t = crm.create("ticket", {"title": "t"})
    w = crm.create("watcher", {"name": "Ирина", "ticket": t["id"]})
    pin = crm.create("pin", {"label": "p", "about": f"ticket:{t['id']}"})
    tag = crm.create("tag", {"name": "x", "tickets": [t["id"]]})
    crm.delete("ticket", t["id"])
    entries = crm.timeline("watcher", w["id"]) + crm.timeline("pin", pin["id"]) + crm.timeline("tag", tag["id"])
    last = {(e["entity"], e["record_id"]): e for e in entries if e.get("action") == "unlink"}
    assert last[("watcher", w["id"])]["changes"] == {"ticket": [t["id"], None]}
    assert last[("pin", pin["id"])]["changes"] == {"about": [{"entity": "ticket", "id": t["id"]}, None]}
    assert last[("tag", tag["id"])]["changes"] == {"tickets": [t["id"], None]}
