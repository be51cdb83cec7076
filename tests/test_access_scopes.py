"""How roles combine into one scope (runtime.access.scope): the widest grant wins whatever the
order of the roles, an unknown role is passed over, and a `team` scope for a user without a team
still covers the user's own records; on SQLite and PostgreSQL. (Killed survivors of
tools/mutation.py on access.py.)"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

import metacrm
from metacrm.runtime.access import SYSTEM, Actor, scope

MODEL = """\
metacrm: 1
name: scopes
entities:
  deal:
    owner: true
    fields:
      title: {type: string, required: true}
roles:
  nothing: {deal: {read: none}}
  mine:    {deal: {read: own, create: own, update: own}}
  team:    {deal: {read: team, create: team, update: team}}
  every:   {deal: {read: all}}
"""
ORDER = ["nothing", "mine", "team", "every"]  # narrowest first
SCOPE = {"nothing": "none", "mine": "own", "team": "team", "every": "all"}


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "scopes.yaml"
    path.write_text(MODEL, encoding="utf-8")
    return metacrm.load_model(path)


def test_the_widest_role_wins_in_any_order(model) -> None:
    for size in (1, 2, 3):
        for roles in itertools.permutations(ORDER, size):
            widest = max(roles, key=ORDER.index)
            actor = Actor("anna", roles=roles)  # a tuple: this order, not a set's
            assert scope(model, actor, "deal", "read") == SCOPE[widest], roles
    assert scope(model, Actor("anna", roles=()), "deal", "read") == "none"
    assert scope(model, SYSTEM, "deal", "read") == "all"


def test_an_unknown_role_is_passed_over(model) -> None:
    for roles, expected in [(("ghost", "every"), "all"), (("every", "ghost"), "all"), (("ghost", "mine"), "own")]:
        assert scope(model, Actor("anna", roles=roles), "deal", "read") == expected, roles


def test_an_actor_cannot_be_changed() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SYSTEM.login = "root"  # the shared system actor stays the system
    assert SYSTEM.system


def test_team_scope_without_a_team_covers_own_records(db_url, model) -> None:
    crm = metacrm.connect(model, db_url)
    crm.migrate()
    crm.add_user("solo", roles=["team"])  # no team
    crm.add_user("other", roles=["team"], team="north")
    mine = crm.create("deal", {"title": "Моя", "owner": "solo"})
    theirs = crm.create("deal", {"title": "Чужая", "owner": "other"})
    solo = crm.as_user("solo")
    assert [d["title"] for d in solo.find("deal")] == ["Моя"]
    assert solo.update("deal", mine["id"], {"title": "Моя, изменена"})["title"] == "Моя, изменена"
    assert solo.create("deal", {"title": "Ещё моя", "owner": "solo"})["owner"] == "solo"
    with pytest.raises(metacrm.PermissionDenied, match="may not update deal"):
        solo.update("deal", theirs["id"], {"title": "x"})
    with pytest.raises(metacrm.PermissionDenied, match="owned by other"):
        solo.create("deal", {"title": "Для другого", "owner": "other"})
    crm.close()
