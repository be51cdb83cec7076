"""Filters through links respect row-level access (issue 15, item 1), written as an attacker.

A user who may read their own deal but not its client must learn nothing about the client's
fields through a filter on the deal (``client.secret = '…'``, ``startswith`` letter by letter),
nor about hidden children through an inverse path (``deals.amount > N``), on any read path:
find, count, ``metacrm list``, board, export, related, order_by. Each probe asks the same
question with the true value of a hidden field and with a wrong one: the answers must be equal
(and for the system user, who may read everything, they must differ, or the probe proves
nothing). Some probes instead change the hidden record (as the system) between two asks.
Forward, inverse, many-to-many, polymorphic links and two hops; SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app
from metacrm.io import export_csv

MODEL = Path(__file__).parent / "fixtures" / "valid" / "paths_access.yaml"
USERS = [
    ("ann", "reads_own", "north"),
    ("bob", "reads_own", "north"),
    ("cid", "reads_team", "north"),
    ("dan", "reads_team", "south"),
    ("eve", "reads_all", None),
    ("nil", "reads_none", None),
    ("dee", "deals_only", None),
    ("mia", "mix_a", "north"),
    ("max", "mix_b", "south"),
]
WRONG_ID = 10**9


def build_world(crm) -> dict:
    """ann's records link to bob's (hidden from ann) everywhere; dan's (south) are hidden
    from the north team."""
    for login, role, team in USERS:
        crm.add_user(login, roles=[role], team=team)
    ids: dict = {}

    def make(key, entity, owner, **values):
        ids[key] = crm.create(entity, {**values, "owner": owner})["id"]

    make("R_ann", "region", "ann", name="north-r", secret="ra")
    make("R_bob", "region", "bob", name="west-r", secret="R-S3cret")
    make("R_lone", "region", "ann", name="lone-r", secret="rl")
    make("C_ann", "client", "ann", name="Ann client", secret="mine", score=5, region=ids["R_bob"])
    make("C_ann2", "client", "ann", name="Ann second", secret="mine2", score=6, region=ids["R_ann"])
    make("C_bob", "client", "bob", name="Bob client", secret="S3cret", score=42, region=ids["R_ann"])
    make("C_dan", "client", "dan", name="Dan client", secret="south-secret", score=77, region=ids["R_ann"])
    make("P_ann", "product", "ann", name="Ann product", secret="pa", price="10.00")
    make("P_bob", "product", "bob", name="Bob product", secret="P-S3cret", price="99.00")
    make("P_lone", "product", "ann", name="Lone product", secret="pl", price="1.00")
    for key, owner, amount, note, client, products in [
        ("D_ann1", "ann", "100.00", "n1", "C_bob", ["P_bob"]),
        ("D_ann2", "ann", "10.00", "n2", "C_ann", ["P_ann", "P_bob"]),
        ("D_bob", "bob", "777.00", "hidden-note", "C_ann", ["P_ann"]),
        ("D_bob2", "bob", "555.00", "hidden2", "C_ann2", ["P_lone"]),
        ("D_cid", "cid", "20.00", "n3", "C_dan", []),
        ("D_dan", "dan", "333.00", "south-note", "C_ann", []),
        ("D_mia", "mia", "30.00", "n4", "C_bob", ["P_bob"]),
    ]:
        products = [ids[p] for p in products]
        make(key, "deal", owner, title="deal", amount=amount, note=note, client=ids[client], products=products)
    make("T_bob", "task", "bob", title="t", secret="T-S3cret", subject={"entity": "client", "id": ids["C_ann"]})
    make("T_bob2", "task", "bob", title="t", secret="T2-S3cret", subject={"entity": "deal", "id": ids["D_ann2"]})
    make("T_bob3", "task", "bob", title="t", secret="T4", subject={"entity": "client", "id": ids["C_ann2"]})
    make("T_ann", "task", "ann", title="t", secret="mine-t", subject={"entity": "client", "id": ids["C_ann"]})
    make("T_dan", "task", "dan", title="t", secret="T3-S3cret", subject={"entity": "deal", "id": ids["D_cid"]})
    return ids


@pytest.fixture
def world(db_url):
    crm = metacrm.connect(MODEL, db_url)
    crm.migrate()
    ids = build_world(crm)
    yield crm, ids, db_url
    crm.close()


# (entity, filter with {} for the guess, the hidden true value, a wrong guess, who may not read it)
PROBES = [
    # forward single link, to a client ann may not read (D_ann1 -> C_bob), south's (D_cid -> C_dan)
    ("deal", "client.secret = '{}'", "S3cret", "Wrong", "ann mia dee"),
    ("deal", "client.secret = '{}'", "south-secret", "Wrong", "ann cid"),
    ("deal", "client.secret = '{}'", "mine", "Wrong", "max"),
    ("deal", "client.secret startswith '{}'", "S3", "X", "ann mia"),
    ("deal", "client.secret contains '{}'", "cre", "xyz", "ann mia"),
    ("deal", "not (client.secret = '{}')", "S3cret", "Wrong", "ann mia"),
    ("deal", "client.secret != '{}'", "S3cret", "Wrong", "ann mia"),
    ("deal", "not (client.secret != '{}')", "S3cret", "Wrong", "ann mia"),
    ("deal", "client.secret in ('{}', 'zz')", "S3cret", "Wrong", "ann mia"),
    ("deal", "client.secret not in ('{}')", "S3cret", "Wrong", "ann mia"),
    ("deal", "client.score >= {}", 42, 43, "ann mia"),
    ("deal", "not (client.score < {})", 42, 43, "ann mia"),
    ("deal", "client.score between {} and 50", 40, 43, "ann mia"),
    ("deal", "client.score not between {} and 50", 40, 43, "ann mia"),
    ("deal", "client.score * 2 = {}", 84, 86, "ann mia"),  # arithmetic through a link
    ("deal", "not (client.score * 2 = {})", 84, 86, "ann mia"),
    ("deal", "amount + client.score = {}", 142, 143, "ann"),
    ("deal", "client.secret = '{}' or title = 'nothing'", "S3cret", "Wrong", "ann mia"),
    ("deal", "not (client.secret = '{}' and title = 'deal')", "S3cret", "Wrong", "ann mia"),
    # two hops: a hidden region behind a visible client, a visible region behind a hidden client
    ("deal", "client.region.secret = '{}'", "R-S3cret", "Wrong", "ann mia max"),
    ("deal", "not (client.region.secret = '{}')", "R-S3cret", "Wrong", "ann mia max"),
    ("deal", "client.region.name = '{}'", "north-r", "south-r", "ann mia"),
    ("deal", "client.region.secret is not null and client.region.secret startswith '{}'", "R-", "Q-", "ann mia max"),
    # many-to-many and its inverse
    ("deal", "products.secret = '{}'", "P-S3cret", "Wrong", "ann max"),
    ("deal", "not (products.secret = '{}')", "P-S3cret", "Wrong", "ann max"),
    ("deal", "products.price > {}", 98, 100, "ann max"),
    ("deal", "products.deals.note = '{}'", "hidden-note", "Wrong", "ann mia"),
    ("product", "deals.note = '{}'", "hidden-note", "Wrong", "ann mia"),
    ("product", "deals = {}", "D_bob", WRONG_ID, "ann mia"),
    ("product", "deals.client.secret = '{}'", "S3cret", "Wrong", "ann mia"),
    # inverse of a single link: hidden children
    ("client", "deals.amount > {}", 776, 778, "ann"),
    ("client", "deals.amount = {}", 555, 556, "ann"),
    ("client", "deals.note startswith '{}'", "hidden", "zzz", "ann"),
    ("client", "not (deals.note = '{}')", "hidden2", "Wrong", "ann"),
    ("client", "deals = {}", "D_bob2", WRONG_ID, "ann"),
    ("client", "deals.id in ({}, 0)", "D_dan", WRONG_ID, "ann cid"),
    ("client", "region.secret = '{}'", "R-S3cret", "Wrong", "ann"),
    ("client", "deals.products.secret = '{}'", "P-S3cret", "Wrong", "ann"),
    ("client", "region.clients.secret = '{}'", "S3cret", "Wrong", "ann"),
    ("region", "clients.secret = '{}'", "S3cret", "Wrong", "ann mia"),
    ("region", "clients.deals.amount > {}", 554, 556, "ann mia"),
    ("region", "clients.deals.note = '{}'", "hidden2", "Wrong", "ann mia"),
    # polymorphic: tasks whose subject is a client or a deal
    ("client", "tasks.secret = '{}'", "T-S3cret", "Wrong", "ann"),
    ("deal", "tasks.secret = '{}'", "T2-S3cret", "Wrong", "ann"),
    ("deal", "tasks.secret = '{}'", "T3-S3cret", "Wrong", "ann cid"),
    ("deal", "client.tasks.secret = '{}'", "T-S3cret", "Wrong", "ann"),
    ("deal", "client.tasks.secret = '{}'", "mine-t", "Wrong", "max"),
    ("deal", "client.deals.note = '{}'", "hidden-note", "Wrong", "ann mia"),
    ("deal", "client.deals.tasks.secret = '{}'", "T3-S3cret", "Wrong", "ann cid"),
]
RELATED = {  # a record ann may read, and the list of records of the probe's entity below it
    "deal": ("client", "C_ann", "deals"),
    "client": ("region", "R_ann", "clients"),
    "product": ("deal", "D_ann2", "products"),
}


def text_of(template: str, value, ids: dict) -> str:
    return template.format(ids[value] if isinstance(value, str) and value in ids else value)


def ids_of(rows) -> list[int]:
    return sorted(r["id"] for r in rows)


def ask_find(crm, entity, where, ids):
    return ids_of(crm.find(entity, where))


def ask_count(crm, entity, where, ids):
    return crm.count(entity, where)


def ask_order(crm, entity, where, ids):
    order = {"deal": "-amount,client", "client": "-score,region", "product": "-price", "region": "-name"}[entity]
    return [r["id"] for r in crm.find(entity, where, order_by=order, limit=3)]


def ask_board(crm, entity, where, ids):
    return crm.board(entity, where=where) if entity == "deal" else None


def ask_export(crm, entity, where, ids):
    out = io.StringIO()
    export_csv(crm, entity, out, where=where)
    return out.getvalue()


def ask_related(crm, entity, where, ids):
    if entity not in RELATED:
        return None
    base, key, name = RELATED[entity]
    try:
        return ids_of(crm.related(base, ids[key], name, where=where))
    except metacrm.PermissionDenied:
        return "denied"


ASKS = [ask_find, ask_count, ask_order, ask_board, ask_export, ask_related]


@pytest.mark.parametrize("ask", ASKS, ids=lambda f: f.__name__[4:])
def test_a_guess_is_answered_as_a_wrong_guess(world, ask) -> None:
    crm, ids, _ = world
    system = crm.as_user(None)
    for entity, template, true, wrong, attackers in PROBES:
        right, bad = text_of(template, true, ids), text_of(template, wrong, ids)
        for login in attackers.split():
            user = crm.as_user(login)
            assert ask(user, entity, right, ids) == ask(user, entity, bad, ids), (login, right)
    for entity, template, true, wrong, _ in PROBES:  # each probe tells the values apart for the system
        right, bad = text_of(template, true, ids), text_of(template, wrong, ids)
        assert ask_find(system, entity, right, ids) != ask_find(system, entity, bad, ids), right


def test_cli_list_answers_a_guess_as_a_wrong_guess(world) -> None:
    crm, ids, db_url = world
    runner = CliRunner()

    def cli_list(login, entity, where):
        result = runner.invoke(
            app,
            [
                "list",
                entity,
                "--where",
                where,
                "--as",
                login,
                "--format",
                "json",
                "--model",
                str(MODEL),
                "--db",
                db_url,
            ],
        )
        assert result.exit_code == 0, result.output
        return ids_of(json.loads(result.stdout))

    for entity, template, true, wrong, attackers in PROBES:
        right, bad = text_of(template, true, ids), text_of(template, wrong, ids)
        login = attackers.split()[0]
        assert cli_list(login, entity, right) == cli_list(login, entity, bad), right
    assert cli_list("eve", "deal", "client.secret = 'S3cret'") == sorted([ids["D_ann1"], ids["D_mia"]])


# (entity, filter, a change (as the system) to records the users named may not read, who)
CHANGES = [
    ("deal", "client.secret is null", lambda c, i: c.update("client", i["C_bob"], {"secret": None}), "ann mia dee"),
    ("deal", "client.region.secret is null", lambda c, i: c.update("region", i["R_bob"], {"secret": None}), "ann max"),
    ("deal", "not (client.score is null)", lambda c, i: c.update("client", i["C_bob"], {"score": None}), "ann mia"),
    ("deal", "products.secret is not null", lambda c, i: c.update("product", i["P_bob"], {"secret": None}), "ann"),
    ("deal", "tasks is not null", lambda c, i: c.delete("task", i["T_bob2"]), "ann"),
    ("client", "deals.note is null", lambda c, i: c.update("deal", i["D_bob2"], {"note": None}), "ann"),
    ("client", "deals is null", lambda c, i: c.update("deal", i["D_bob2"], {"client": None}), "ann"),
    ("client", "deals is not null", lambda c, i: c.update("deal", i["D_bob2"], {"client": i["C_ann2"]}), "ann"),
    ("client", "tasks is null", lambda c, i: c.delete("task", i["T_bob3"]), "ann"),
    ("product", "deals is null", lambda c, i: c.update("deal", i["D_bob2"], {"products": []}), "ann mia"),
    ("region", "clients is null", lambda c, i: c.update("client", i["C_bob"], {"region": i["R_lone"]}), "ann mia"),
]


def test_changing_hidden_records_changes_no_answer(world) -> None:
    crm, ids, _ = world
    for entity, where, change, who in CHANGES:
        users = [crm.as_user(login) for login in who.split()]
        before = [(ask_find(u, entity, where, ids), ask_count(u, entity, where, ids)) for u in users]
        system_before = ask_find(crm, entity, where, ids)
        change(crm, ids)
        assert [(ask_find(u, entity, where, ids), ask_count(u, entity, where, ids)) for u in users] == before, where
        assert ask_find(crm, entity, where, ids) != system_before, where  # the change shows to the system


def test_visible_records_still_match(world) -> None:
    crm, ids, _ = world
    ann, cid, eve, mia = (crm.as_user(u) for u in ("ann", "cid", "eve", "mia"))

    def found(user, entity, where):
        return ask_find(user, entity, where, ids)

    def of(*keys):
        return sorted(ids[k] for k in keys)

    assert found(ann, "deal", "client.secret = 'mine'") == of("D_ann2")
    assert found(ann, "deal", "client.secret startswith 'MI'") == of("D_ann2")
    assert found(ann, "deal", "not (client.secret = 'other')") == of("D_ann2")  # D_ann1's client is hidden
    assert found(ann, "deal", "client.secret is null") == of("D_ann1")  # a hidden client is no client
    assert found(ann, "deal", "client is not null") == of("D_ann1", "D_ann2")  # the deal's own column
    assert found(ann, "deal", f"client = {ids['C_bob']}") == of("D_ann1")
    assert found(ann, "deal", f"products = {ids['P_bob']}") == of("D_ann1", "D_ann2")  # the deal's own ids
    assert found(ann, "deal", "products.secret = 'pa'") == of("D_ann2")
    assert found(ann, "deal", "client.region.secret = 'ra'") == []  # C_ann's region is bob's
    assert found(ann, "client", "region.secret = 'ra'") == of("C_ann2")
    assert found(ann, "client", "deals.amount = 10") == of("C_ann")
    assert found(ann, "client", "deals is null") == of("C_ann2")  # its only deal is bob's
    assert found(ann, "client", "tasks.secret = 'mine-t'") == of("C_ann")
    assert found(ann, "product", "deals.note = 'n2'") == of("P_ann")
    assert found(ann, "region", "clients.secret = 'mine2'") == of("R_ann")
    assert found(ann, "deal", "client.score * 2 = 10") == of("D_ann2")
    assert found(ann, "deal", "amount + client.score = 15") == of("D_ann2")
    # team north reads ann's and bob's records, not dan's (south)
    assert found(cid, "deal", "client.secret = 'S3cret'") == of("D_ann1", "D_mia")
    assert found(cid, "client", "deals.amount > 776") == of("C_ann")
    assert found(cid, "deal", "client.secret = 'south-secret'") == []
    assert found(cid, "deal", "client.secret is null") == of("D_cid")
    # mixed: mia reads her deals, no clients, the north team's products and tasks, every region
    assert found(mia, "deal", "products.secret = 'P-S3cret'") == of("D_mia")
    assert found(mia, "deal", "client.secret = 'S3cret'") == []
    assert found(mia, "region", "clients.secret = 'S3cret'") == []
    assert found(mia, "region", "name = 'north-r'") == of("R_ann")
    # everything for a user who reads all, as for the system
    assert found(eve, "deal", "client.secret = 'S3cret'") == found(crm, "deal", "client.secret = 'S3cret'")
    assert found(eve, "client", "deals.amount > 776") == of("C_ann")
    assert found(eve, "deal", "client.deals.tasks.secret = 'T3-S3cret'") == of("D_cid")


def test_order_by_cannot_go_through_links(world) -> None:
    crm, ids, _ = world
    ann = crm.as_user("ann")
    for order in ("client.secret", "client.score", "deals.amount"):
        with pytest.raises(metacrm.ValidationError, match="cannot order by unknown field"):
            ann.find("deal", order_by=order)
    # ordering by the link orders by the deal's own column, never by the client's values
    assert [r["id"] for r in ann.find("deal", order_by="-client")] == [ids["D_ann1"], ids["D_ann2"]]


def test_board_counts_and_amounts_hide_nothing(world) -> None:
    crm, ids, _ = world
    dee = crm.as_user("dee")  # reads her own deals (none) and nothing else
    crm.create("deal", {"title": "d", "amount": "5.00", "owner": "dee", "client": ids["C_bob"]})
    guess = dee.board("deal", where="client.secret = 'S3cret'")
    assert guess == dee.board("deal", where="client.secret = 'Wrong'")
    assert guess["count"] == 0
    assert dee.board("deal", where="client is not null")["count"] == 1


def test_access_that_cannot_be_built_fails_closed(world) -> None:
    """A read filter that is not a condition refuses to compile; one that admits nothing
    hides every linked record, at every hop."""
    from sqlalchemy import false, select

    from metacrm.expr import compile_sql

    crm, ids, _ = world
    table = crm.storage.table("deal")
    with pytest.raises(TypeError, match="access for client"):
        compile_sql(crm.storage, "deal", "client.secret = 'S3cret'", access=lambda entity, t: "owner = 'ann'")
    calls: list[str] = []

    def nothing(entity, t):
        calls.append(entity)
        return false()

    clause = compile_sql(
        crm.storage, "deal", "client.region.secret = 'ra' or products.deals.note = 'n1'", access=nothing
    )
    with crm.engine.connect() as conn:
        assert conn.execute(select(table.c.id).where(clause)).all() == []
    assert sorted(set(calls)) == ["client", "deal", "product", "region"]
