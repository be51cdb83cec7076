"""Permission answers that are true (issue 14, item 4): a missing right is named before any value
is checked; a team-scoped reassignment outside the team says so; a link to a record the user may
not read says that (in the same words as a missing one); reading an entity the user has no read
right on is refused, in the library and the CLI, not answered with nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app

MODEL = """\
metacrm: 1
name: perms
entities:
  client:
    fields: {name: {type: string, required: true}}
    owner: true
  deal:
    fields:
      title: {type: string, required: true}
      amount: {type: money}
    links: {client: {to: client}}
    owner: true
    stages:
      initial: new
      states:
        new: {}
        won: {kind: won}
      transitions:
        new: [won]
roles:
  rep:
    client: {read: team, create: team, update: team}
    deal: {read: team, create: team, update: team, reassign: team, move: team}
  viewer:
    deal: {read: all}
    client: {read: all}
  blind:
    deal: {create: all}
"""


@pytest.fixture
def world(db_url, tmp_path: Path):
    path = tmp_path / "perms.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    crm.add_user("ann", roles=["rep"], team="north")
    crm.add_user("al", roles=["rep"], team="north")
    crm.add_user("bob", roles=["rep"], team="south")
    crm.add_user("vic", roles=["viewer"])
    crm.add_user("bli", roles=["blind"])
    ids = {
        "ann_client": crm.create("client", {"name": "Север", "owner": "ann"})["id"],
        "bob_client": crm.create("client", {"name": "Юг", "owner": "bob"})["id"],
        "ann_deal": crm.create("deal", {"title": "Поставка", "owner": "ann"})["id"],
    }
    yield crm, ids, path
    crm.close()


def state(crm):
    return {e: crm.find(e) for e in crm.model.entities}


def test_a_missing_right_is_named_before_any_value_is_checked(world) -> None:
    crm, ids, _ = world
    before = state(crm)
    with pytest.raises(
        metacrm.PermissionDenied, match=r"user 'vic' may not create deal records \(scope for create: none\)"
    ):
        crm.as_user("vic").create("deal", {"title": "x", "amount": "not a number"})
    with pytest.raises(
        metacrm.PermissionDenied, match=r"user 'vic' may not update deal records \(scope for update: none\)"
    ):
        crm.as_user("vic").update("deal", ids["ann_deal"], {"amount": "not a number"})
    with pytest.raises(
        metacrm.PermissionDenied, match=r"user 'vic' may not move deal records \(scope for move: none\)"
    ):
        crm.as_user("vic").move("deal", ids["ann_deal"], "won", note="\x00")
    with pytest.raises(metacrm.PermissionDenied, match="may not create client records"):
        crm.as_user("vic").create_many("client", [{"name": ""}, {"name": None}])
    assert state(crm) == before


def test_a_team_reassignment_outside_the_team_says_so(world) -> None:
    crm, ids, _ = world
    ann = crm.as_user("ann")
    assert ann.update("deal", ids["ann_deal"], {"owner": "al"})["owner"] == "al"  # same team
    before = state(crm)
    with pytest.raises(
        metacrm.PermissionDenied, match=r"to 'bob', who is not in team 'north' \(scope for reassign: team\)"
    ) as caught:
        ann.update("deal", ids["ann_deal"], {"owner": "bob"})
    assert (caught.value.action, caught.value.record_id) == ("reassign", ids["ann_deal"])
    assert state(crm) == before


def test_a_link_to_a_hidden_record_reads_like_a_missing_one_and_says_why(world) -> None:
    crm, ids, _ = world
    ann = crm.as_user("ann")
    before = state(crm)
    answers = []
    for target in (ids["bob_client"], 999_999):  # hidden (another team's), then missing
        with pytest.raises(metacrm.ValidationError) as caught:
            ann.create("deal", {"title": "x", "client": target})
        answers.append(str(caught.value).replace(str(target), "N"))
    assert answers[0] == answers[1] == "deal.client: no client with id N that user 'ann' may read"
    assert state(crm) == before
    # the system user may link to any record; a missing one is named without the reader
    with pytest.raises(metacrm.ValidationError, match=r"^deal.client: no client with id 999999$"):
        crm.create("deal", {"title": "x", "client": 999_999})
    assert ann.create("deal", {"title": "x", "client": ids["ann_client"]})["client"] == ids["ann_client"]


def test_reading_without_a_read_right_is_refused_not_empty(world) -> None:
    crm, _, _ = world
    blind = crm.as_user("bli")
    for read in (blind.find, blind.count):
        with pytest.raises(metacrm.PermissionDenied, match=r"may not read deal records \(scope for read: none\)"):
            read("deal")
    with pytest.raises(metacrm.PermissionDenied, match=r"may not read client records"):
        blind.find("client")
    # a right that covers no record yet is not refused: an own/team scope with nothing in it
    assert crm.as_user("bob").find("deal") == []


@pytest.mark.parametrize("command", [["list", "deal"], ["export", "deal"], ["get", "deal", "1"]])
def test_the_cli_refuses_a_read_without_the_right(world, db_url, command) -> None:
    crm, _, path = world
    result = CliRunner().invoke(app, [*command, "--model", str(path), "--db", db_url, "--as", "bli"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output + result.stderr
    assert "may not read deal" in result.stderr
