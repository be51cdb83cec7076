"""`to: user` links (issue 13 item 6): an account manager (`manager: {to: user}`) and assignees
(`assignees: {to: user, many: true}`) held as logins, checked against the users table, linked and
unlinked by login, filtered with `:me`, and the `assigned` scope of row-level access honouring
them; removing a user linked by them; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

import metacrm
from metacrm.errors import ConflictError, ModelError, NotFound, PermissionDenied, ValidationError

MODEL = """\
metacrm: 1
name: users
entities:
  client:
    owner: true
    fields:
      name: {type: string, required: true}
    links:
      manager: {to: user, on_delete: set_null}
  deal:
    owner: true
    fields:
      title: {type: string, required: true}
    links:
      client: {to: client}
      manager: {to: user, label: Менеджер}
      assignees: {to: user, many: true}
    search: [title]
    stages:
      initial: new
      states: {new: {}, won: {kind: won}, lost: {kind: lost}}
      transitions: {new: [won, lost]}
  ticket:
    fields:
      subject: {type: string, required: true}
    links:
      assignees: {to: user, many: true, required: true}
roles:
  rep:
    deal: {read: assigned, update: assigned, create: assigned, move: none}
    client: {read: {assigned: [manager]}}
    ticket: {read: assigned, create: assigned}
  lead:
    "*": team
"""


@pytest.fixture
def crm(tmp_path, db_url):
    path = tmp_path / "users.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    crm.add_user("alice", roles=["rep"], name="Alice A.")
    crm.add_user("bob", roles=["rep"])
    crm.add_user("carol", roles=["rep"])
    yield crm
    crm.close()


def test_values_are_logins_checked_against_the_users(crm):
    d = crm.create("deal", {"title": "a", "manager": " alice ", "assignees": "bob, alice, bob"})
    assert d["manager"] == "alice" and d["assignees"] == ["bob", "alice"]
    assert crm.create("deal", {"title": "b"})["assignees"] == []
    with pytest.raises(ValidationError, match=r"^deal\.manager: no user 'nobody' \(") as exc:
        crm.create("deal", {"title": "c", "manager": "nobody"})
    assert exc.value.issues[0].field == "manager"
    with pytest.raises(ValidationError, match=r"deal\.assignees: no user 'zed'"):
        crm.update("deal", d["id"], {"assignees": ["alice", "zed"]})
    with pytest.raises(ValidationError, match=r"ticket\.assignees: is required; give at least one user's login"):
        crm.create("ticket", {"subject": "s"})
    with pytest.raises(ValidationError, match=r"deal\.manager: 5 is not a user login"):
        crm.create("deal", {"title": "c", "manager": 5})
    # a batch names each bad record, nothing is written
    with pytest.raises(ValidationError) as exc:
        crm.create_many("deal", [{"title": "x", "manager": "alice"}, {"title": "y", "assignees": ["ghost"]}])
    assert [(i.index, i.field) for i in exc.value.issues] == [(1, "assignees")]
    assert crm.count("deal") == 2


def test_link_and_unlink_by_login(crm):
    d = crm.create("deal", {"title": "a"})
    assert crm.link("deal", d["id"], "manager", "bob")["manager"] == "bob"
    assert crm.link("deal", d["id"], "assignees", "bob")["assignees"] == ["bob"]
    after = crm.link("deal", d["id"], "assignees", "alice")
    assert after["assignees"] == ["bob", "alice"] and after["version"] == 4
    assert crm.link("deal", d["id"], "assignees", "alice")["version"] == 4  # already there: unchanged
    assert crm.unlink("deal", d["id"], "assignees", "bob")["assignees"] == ["alice"]
    with pytest.raises(NotFound, match=r"deal 1 is not linked to user 'bob' through assignees"):
        crm.unlink("deal", d["id"], "assignees", "bob")
    assert crm.unlink("deal", d["id"], "manager")["manager"] is None
    with pytest.raises(ValidationError, match="unknown link 'managr'.*did you mean 'manager'"):
        crm.link("deal", d["id"], "managr", "bob")
    before = crm.get("deal", d["id"])
    with pytest.raises(ValidationError, match=r"^deal\.manager: a link to users carries no values$"):
        crm.link("deal", d["id"], "manager", "bob", values={"qty": 1})
    assert crm.get("deal", d["id"]) == before  # nothing written
    kinds = [e["action"] for e in crm.timeline("deal", d["id"])]
    assert kinds.count("link") == 3 and kinds.count("unlink") == 2


def test_disabled_users_stay_but_are_not_linked_anew(crm):
    d = crm.create("deal", {"title": "a", "assignees": ["bob"]})
    crm.disable_user("bob")
    assert crm.get("deal", d["id"])["assignees"] == ["bob"]
    with pytest.raises(ValidationError, match=r"deal\.manager: user 'bob' is disabled"):
        crm.link("deal", d["id"], "manager", "bob")
    # an update keeping bob where he is, and adding alice, is fine
    assert crm.update("deal", d["id"], {"assignees": ["bob", "alice"]})["assignees"] == ["bob", "alice"]


def test_filters_with_me(crm):
    crm.create("deal", {"title": "a", "manager": "alice"})
    crm.create("deal", {"title": "b", "assignees": ["bob", "alice"]})
    crm.create("deal", {"title": "c", "assignees": ["carol"]})
    mine = "manager = :me or assignees contains :me"
    assert [d["title"] for d in crm.as_user("alice").find("deal", where=mine)] == ["a", "b"]
    assert [d["title"] for d in crm.find("deal", where="assignees contains 'carol'")] == ["c"]
    assert crm.count("deal", where="manager is null") == 2
    board = crm.as_user("alice").board("deal", where="manager = :me")
    assert [(c["stage"], c["count"]) for c in board["columns"]][:1] == [("new", 1)]
    # reports: grouped by a link to users (labelled by name), each user's sight honoured
    rows = crm.report_group("deal", "manager")["rows"]
    assert sorted((r["count"], r["value"] or "", r["label"] or "") for r in rows) == [
        (1, "alice", "Alice A."),
        (2, "", ""),
    ]
    assert crm.as_user("bob").funnel("deal")["count"] == 1  # b: bob is an assignee


def test_assigned_scope(crm):
    a = crm.create("deal", {"title": "a", "manager": "alice"})
    b = crm.create("deal", {"title": "b", "assignees": ["bob", "alice"]})
    c = crm.create("deal", {"title": "c", "assignees": ["carol"], "owner": "bob"})
    seen = {u: [d["title"] for d in crm.as_user(u).find("deal")] for u in ("alice", "bob", "carol")}
    assert seen == {"alice": ["a", "b"], "bob": ["b", "c"], "carol": ["c"]}  # bob owns c
    bob = crm.as_user("bob")
    with pytest.raises(PermissionDenied, match="may not read deal 1 .scope for read: assigned"):
        bob.get("deal", a["id"])
    assert bob.update("deal", b["id"], {"title": "b2"})["title"] == "b2"
    with pytest.raises(PermissionDenied, match="may not update deal 1"):
        bob.update("deal", a["id"], {"title": "x"})
    # a path through a link sees only the clients the user may read (the manager link alone counts)
    cl = crm.create("client", {"name": "Secret", "owner": "alice", "manager": "carol"})
    crm.update("deal", c["id"], {"client": cl["id"]})
    assert crm.as_user("carol").count("deal", where="client.name = 'Secret'") == 1
    assert crm.as_user("bob").count("deal", where="client.name = 'Secret'") == 0
    assert crm.as_user("alice").count("client") == 1  # the owner: `assigned` takes in `own`
    assert crm.as_user("bob").count("client") == 0


def test_assigned_create_on_an_entity_without_owner(crm):
    alice = crm.as_user("alice")
    assert alice.create("ticket", {"subject": "s", "assignees": ["alice", "bob"]})["assignees"] == ["alice", "bob"]
    with pytest.raises(PermissionDenied, match="may not create ticket records that do not name them in assignees"):
        alice.create("ticket", {"subject": "s", "assignees": ["bob"]})
    assert crm.count("ticket") == 1
    # with an owner, `create: assigned` is `own`: the new record's owner must be the user
    assert alice.create("deal", {"title": "mine", "assignees": ["bob"]})["owner"] == "alice"
    with pytest.raises(PermissionDenied, match="may not create deal records owned by bob"):
        alice.create("deal", {"title": "x", "owner": "bob", "manager": "alice"})


def test_team_scope_takes_in_assigned_records(crm):
    crm.add_user("dan", roles=["lead"], team="north")
    crm.add_user("erin", roles=["rep"], team="north")
    crm.create("deal", {"title": "team", "owner": "erin"})
    crm.create("deal", {"title": "assigned", "assignees": ["dan"], "owner": "bob"})
    crm.create("deal", {"title": "other", "owner": "bob"})
    assert sorted(d["title"] for d in crm.as_user("dan").find("deal")) == ["assigned", "team"]


def test_a_guessed_value_answers_as_a_wrong_one(crm):
    """Filters on a user link over records the user may not read: a right guess and a wrong one
    answer alike, on every read path of the library."""
    crm.create("deal", {"title": "hidden", "manager": "carol", "assignees": ["carol"]})
    bob = crm.as_user("bob")
    for where in ("manager = 'carol'", "assignees contains 'carol'", "title = 'hidden'"):
        wrong = where.replace("carol", "nobody").replace("hidden", "nothing")
        assert bob.find("deal", where=where) == bob.find("deal", where=wrong) == []
        assert bob.count("deal", where=where) == bob.count("deal", where=wrong) == 0
    assert bob.search("hidden") == bob.search("nothing") == []
    assert [h["id"] for h in crm.as_user("carol").search("hidden")] == [1]


def test_remove_user_restrict_and_set_null(crm):
    c = crm.create("client", {"name": "c", "manager": "bob"})
    d = crm.create("deal", {"title": "a", "manager": "bob", "assignees": ["bob", "alice"]})
    with pytest.raises(
        ConflictError, match=r"user 'bob' is linked to 2 records \(deal\.manager 1, deal\.assignees 1\)"
    ):
        crm.remove_user("bob")
    assert crm.get("deal", d["id"])["manager"] == "bob"  # nothing written
    moved = crm.remove_user("bob", reassign_to="alice")
    assert moved == {"client.manager": 1, "deal.manager": 1, "deal.assignees": 1}
    got = crm.get("deal", d["id"])
    assert (got["manager"], got["assignees"]) == ("alice", ["alice"])
    assert crm.get("client", c["id"])["manager"] is None  # set_null: taken off, not handed over
    crm.create("client", {"name": "d", "manager": "carol"})
    assert crm.remove_user("carol") == {"client.manager": 1}


@pytest.mark.parametrize(
    "links, error",
    [
        (
            "{to: user, inverse: deals}",
            r"6:\d+: error: link 'deal.manager': 'inverse' does not apply to a link to users",
        ),
        ("{to: user, on_delete: cascade}", r"error: link 'deal.manager': on_delete 'cascade' does not apply"),
        ("{to: [user, deal]}", r"error: link 'deal.manager': 'user' cannot be one of several targets"),
        ("{to: user, required: true, on_delete: set_null}", r"on_delete 'set_null' cannot clear a required link"),
    ],
)
def test_model_checks(tmp_path, links, error):
    path = tmp_path / "m.yaml"
    path.write_text(
        f"metacrm: 1\nname: m\nentities:\n  deal:\n    links:\n      manager: {links}\n"
        "    fields:\n      title: {type: string}\n",
        encoding="utf-8",
    )
    with pytest.raises(ModelError, match=error):
        metacrm.load_model(path)


def test_model_checks_roles_and_names(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "metacrm: 1\nname: m\nentities:\n  deal:\n    fields:\n      title: {type: string}\n"
        "    links:\n      manager: {to: user}\n  user:\n    fields:\n      x: {type: string}\n"
        "roles:\n  rep:\n    deal: {read: {assigned: [managr]}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ModelError) as exc:
        metacrm.load_model(path)
    text = str(exc.value) + "".join(f"\n{p}" for p in exc.value.problems)
    assert "entity name 'user' is kept for the CRM's users" in text
    assert "'managr' is not a `to: user` link of 'deal' (links to users: manager)" in text
    assert any(p.type == "role.assigned_link" and p.hint == "did you mean 'manager'?" for p in exc.value.problems)


def test_csv_import_and_export_by_login(crm, tmp_path):
    from metacrm.io.csv_io import export_csv, import_csv

    bad = tmp_path / "bad.csv"
    bad.write_text('title,manager,assignees\nA,alice,"alice,bob"\nC,ghost,alice\n', encoding="utf-8")
    with pytest.raises(ValidationError, match=r"line 3, manager: no user 'ghost'"):
        import_csv(crm, "deal", bad)
    assert crm.count("deal") == 0
    good = tmp_path / "good.csv"
    good.write_text('title,manager,assignees\nA,alice,"alice,bob"\nB,,\n', encoding="utf-8")
    assert import_csv(crm, "deal", good).rows == 2
    out = tmp_path / "out.csv"
    export_csv(crm, "deal", out, columns=["title", "manager", "assignees"])
    assert out.read_text(encoding="utf-8").splitlines() == ["title,manager,assignees", 'A,alice,"alice,bob"', "B,,"]


BEFORE = """\
metacrm: 1
name: mig
entities:
  deal:
    fields:
      title: {type: string, required: true}
      rep: {type: string}
"""


def _plan(crm_path, url, text):
    crm_path.write_text(text, encoding="utf-8")
    crm = metacrm.connect(crm_path, url)
    return crm, crm.migrate(dry_run=True)


def test_migrations_add_user_links_and_convert_logins(tmp_path, db_url):
    path = tmp_path / "mig.yaml"
    crm, _ = _plan(path, db_url, BEFORE)
    crm.migrate()
    crm.add_user("alice")
    crm.create_many("deal", [{"title": "a", "rep": "alice"}, {"title": "b", "rep": "ghost"}, {"title": "c"}])
    crm.close()
    # a required link to users on a table with rows needs a fill naming a stored user
    added = (
        BEFORE
        + "    links:\n      lead: {to: user, required: true, fill: nobody}\n      team: {to: user, many: true}\n"
    )
    crm, plan = _plan(path, db_url, added)
    assert [s.refusal for s in plan if s.refusal] == [
        "fill of deal.lead names no user 'nobody': add the user first (metacrm user add nobody), or fill another"
    ]
    crm.close()
    crm, plan = _plan(path, db_url, added.replace("fill: nobody", "fill: alice"))
    assert not [s for s in plan if s.refusal]
    crm.migrate()
    assert [(d["lead"], d["team"]) for d in crm.find("deal")] == [("alice", [])] * 3
    held = crm
    # a string field holding logins becomes a link to users: refused while a value names no user
    converted = added.replace("fill: nobody", "fill: alice").replace("      rep: {type: string}\n", "")
    converted += "      rep: {to: user}\n"
    crm, plan = _plan(tmp_path / "converted.yaml", db_url, converted)
    (refused,) = [s for s in plan if s.refusal]
    assert refused.count == 1 and refused.refusal.startswith(
        "needs data: 1 value of deal.rep names no user, e.g. id 2: 'ghost'; add the users"
    )
    held.add_user("ghost")
    held.close()
    crm.migrate()
    assert [d["rep"] for d in crm.find("deal")] == ["alice", "ghost", None]
    with pytest.raises(ValidationError, match="no user 'zed'"):
        crm.update("deal", 1, {"rep": "zed"})
    crm.close()


def test_cli(crm, tmp_path):
    from typer.testing import CliRunner

    from metacrm.cli.main import app

    where = ["--model", str(tmp_path / "users.yaml"), "--db", str(crm.engine.url.render_as_string(hide_password=False))]

    def run(*args, code=0):
        result = CliRunner().invoke(app, [*args, *where])
        assert result.exit_code == code, result.output
        return result

    run("create", "deal", "title=a", "manager=alice", "assignees=alice,bob")
    run("link", "deal", "1", "assignees", "carol")
    assert "-> assignees: user alice «Alice A.», user bob «bob», user carol «carol»" in run("get", "deal", "1").stdout
    assert "no user 'zed'" in run("link", "deal", "1", "manager", "zed", code=1).stderr
    listed = run("list", "deal", "--where", "assignees contains :me", "--as", "carol", "--format", "json").stdout
    assert '"title": "a"' in listed
    assert "is linked to 2 records" in run("user", "remove", "alice", code=1).stderr
    removed = run("user", "remove", "alice", "--reassign-to", "bob").stdout
    assert removed.strip() == (
        "user alice removed; taken off 2 links to users (passed to bob where on_delete is restrict)"
    )


def test_notify_the_users_of_a_link(tmp_path, db_url):
    path = tmp_path / "n.yaml"
    path.write_text(
        MODEL.replace(
            "roles:",
            "automations:\n  tell:\n    when: {entity: deal, created: true}\n"
            "    do:\n      - notify: {to: ['users:assignees', 'users:manager'], template: 'New deal {title}'}\nroles:",
        ),
        encoding="utf-8",
    )
    crm = metacrm.connect(path, db_url)
    crm.migrate()
    crm.add_user("alice", email="alice@example.org")
    crm.add_user("bob", email="bob@example.org")
    crm.add_user("carol")
    crm.create("deal", {"title": "a", "manager": "carol", "assignees": ["alice", "bob"]})
    assert sorted(m["recipient"] for m in crm.outbox()) == ["alice@example.org", "bob@example.org"]
    crm.close()
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text(encoding="utf-8").replace("users:manager", "users:managr"), encoding="utf-8")
    with pytest.raises(ModelError, match=r"notify: 'managr' is not a `to: user` link of 'deal' \(did you mean"):
        metacrm.load_model(bad)
