"""Fuzzing filters through links against an independent oracle (issue 15, item 1).

hypothesis writes filters over paths through every kind of link (forward, inverse,
many-to-many, polymorphic; up to three hops; and/or/not, every operator, arithmetic through
links) and runs them as users of each scope (own, team, all, none, mixed per entity, and the
system). The oracle knows nothing of metacrm's compiler or access code: it reads every row as
the system user, decides who may read what from the owner column and the users' teams (the
scopes written out again below, not taken from the model), walks the paths in Python treating
a record the user may not read as absent, evaluates SQL's three-valued logic itself, and keeps
the records the user may read. metacrm's answer must be exactly that, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metacrm
from metacrm.runtime.access import scope

MODEL = Path(__file__).parent / "fixtures" / "valid" / "paths_access.yaml"
ENTITIES = ("region", "client", "deal", "product", "task")
USERS = {  # login: (role, team)
    "ann": ("reads_own", "north"),
    "bob": ("reads_own", "north"),
    "cid": ("reads_team", "north"),
    "dan": ("reads_team", "south"),
    "hal": ("reads_team", None),
    "eve": ("reads_all", None),
    "nil": ("reads_none", None),
    "dee": ("deals_only", "south"),
    "mia": ("mix_a", "north"),
    "max": ("mix_b", "south"),
}
SCOPES = {  # role: entity -> read scope (as paths_access.yaml declares them)
    "reads_own": dict.fromkeys(ENTITIES, "own"),
    "reads_team": dict.fromkeys(ENTITIES, "team"),
    "reads_all": dict.fromkeys(ENTITIES, "all"),
    "reads_none": dict.fromkeys(ENTITIES, "none"),
    "deals_only": {**dict.fromkeys(ENTITIES, "none"), "deal": "own"},
    "mix_a": {"deal": "own", "client": "none", "product": "team", "region": "all", "task": "team"},
    "mix_b": {"deal": "team", "client": "own", "product": "none", "region": "none", "task": "all"},
}
# (entity, link) -> (kind, other entity, the link's name on the declaring side)
LINKS = {
    ("client", "region"): ("single", "region", "region"),
    ("deal", "client"): ("single", "client", "client"),
    ("deal", "products"): ("many", "product", "products"),
    ("region", "clients"): ("inverse", "client", "region"),
    ("client", "deals"): ("inverse", "deal", "client"),
    ("product", "deals"): ("inverse_many", "deal", "products"),
    ("client", "tasks"): ("inverse_poly", "task", "subject"),
    ("deal", "tasks"): ("inverse_poly", "task", "subject"),
}
TEXT, NUMBER, MONEY, ID = "text", "number", "money", "id"
PATHS = {  # root -> (path, kind of its values)
    "deal": [
        ("title", TEXT), ("note", TEXT), ("amount", MONEY), ("client", ID), ("client.secret", TEXT),
        ("client.score", NUMBER), ("client.region", ID), ("client.region.secret", TEXT), ("products", ID),
        ("products.secret", TEXT), ("products.price", MONEY), ("tasks", ID), ("tasks.secret", TEXT),
        ("client.deals.note", TEXT), ("client.deals.amount", MONEY), ("products.deals.note", TEXT),
        ("client.tasks.secret", TEXT), ("client.region.clients.secret", TEXT), ("client.deals.id", ID),
    ],
    "client": [
        ("name", TEXT), ("secret", TEXT), ("score", NUMBER), ("region", ID), ("region.secret", TEXT),
        ("region.name", TEXT), ("deals", ID), ("deals.amount", MONEY), ("deals.note", TEXT),
        ("deals.products.secret", TEXT), ("tasks.secret", TEXT), ("region.clients.score", NUMBER),
        ("deals.client.secret", TEXT), ("deals.products", ID),
    ],
    "product": [
        ("name", TEXT), ("secret", TEXT), ("price", MONEY), ("deals", ID), ("deals.note", TEXT),
        ("deals.amount", MONEY), ("deals.client.secret", TEXT), ("deals.client.region.name", TEXT),
        ("deals.tasks.secret", TEXT),
    ],
    "region": [
        ("name", TEXT), ("secret", TEXT), ("clients", ID), ("clients.secret", TEXT), ("clients.score", NUMBER),
        ("clients.deals.amount", MONEY), ("clients.deals.products.secret", TEXT), ("clients.tasks.secret", TEXT),
    ],
}  # fmt: skip
ARITHMETIC = {  # root -> single-valued numeric paths for 'x * 2' and 'x + y'
    "deal": ["amount", "client.score"],
    "client": ["score"],
    "product": ["price"],
    "region": [],
}
WORDS = ["alpha", "Beta", "gamma", "alp", "ALPHA", "delta"]
PATTERNS = ["a", "AL", "et", "ga", "mm", "zz"]
NUMBERS = [0, 5, 10, 17, 42, 99]
MONEYS = [Decimal("0"), Decimal("10"), Decimal("10.50"), Decimal("99.99"), Decimal("150")]


# -- the world ---------------------------------------------------------------------------------
def build_world(crm, seed: int = 15) -> None:
    """Random owners (some records with none), field values (some null) and links (some absent)."""
    rnd = random.Random(seed)
    for login, (role, team) in USERS.items():
        crm.add_user(login, roles=[role], team=team)
    owners = [*USERS, None]

    def maybe(values, none=0.2):
        return None if rnd.random() < none else rnd.choice(values)

    def owned(values):
        owner = rnd.choice(owners)
        return {**values, "owner": owner} if owner else values

    ids: dict[str, list[int]] = {e: [] for e in ENTITIES}
    for i in range(4):
        ids["region"].append(crm.create("region", owned({"name": f"r{i}", "secret": maybe(WORDS)}))["id"])
    for i in range(8):
        values = {"name": f"c{i}", "secret": maybe(WORDS), "score": maybe(NUMBERS), "region": maybe(ids["region"])}
        ids["client"].append(crm.create("client", owned(values))["id"])
    for i in range(5):
        values = {"name": f"p{i}", "secret": maybe(WORDS), "price": maybe(MONEYS)}
        ids["product"].append(crm.create("product", owned(values))["id"])
    for i in range(14):
        values = {
            "title": f"d{i}",
            "note": maybe(WORDS),
            "amount": maybe(MONEYS),
            "client": maybe(ids["client"]),
            "products": rnd.sample(ids["product"], rnd.randint(0, 3)),
        }
        ids["deal"].append(crm.create("deal", owned(values))["id"])
    for i in range(12):
        kind = rnd.choice(["deal", "client", None])
        subject = {"entity": kind, "id": rnd.choice(ids[kind])} if kind else None
        crm.create("task", owned({"title": f"t{i}", "secret": maybe(WORDS), "subject": subject}))


@pytest.fixture
def world(db_url):
    crm = metacrm.connect(MODEL, db_url)
    crm.migrate()
    build_world(crm)
    rows = {e: {r["id"]: r for r in crm.find(e)} for e in ENTITIES}  # every row, as the system
    yield crm, rows
    crm.close()


# -- the oracle --------------------------------------------------------------------------------
def may_read(login: str | None, entity: str, row: dict) -> bool:
    if login is None:
        return True
    role, team = USERS[login]
    scope = SCOPES[role][entity]
    owner = row.get("owner")
    if scope == "all":
        return True
    if scope == "own" or (scope == "team" and team is None):
        return owner is not None and owner == login
    if scope == "team":
        return owner is not None and owner in {u for u, (_, t) in USERS.items() if t == team}
    return False


def follow(rows, login, entity: str, record: dict, name: str) -> tuple[str, list[dict]]:
    """The readable records one link away."""
    kind, other, link = LINKS[(entity, name)]
    table = rows[other]
    if kind == "single":
        found = [table[record[name]]] if record[name] is not None else []
    elif kind == "many":
        found = [table[i] for i in record[name]]
    elif kind == "inverse":
        found = [r for r in table.values() if r[link] == record["id"]]
    elif kind == "inverse_many":
        found = [r for r in table.values() if record["id"] in r[link]]
    else:
        found = [r for r in table.values() if r[link] == {"entity": entity, "id": record["id"]}]
    return other, [r for r in found if may_read(login, other, r)]  # a hidden record is an absent one


def reach(rows, login, entity: str, record: dict, path: str) -> tuple[bool, list]:
    """(multi, values): the values a path reaches from a record, as the user sees them; multi
    when the path goes through a many or inverse link (whatever this record links to)."""
    *hops, last = path.split(".")
    nodes, multi, here = [record], False, entity
    for part in hops:
        kind, other, _ = LINKS[(here, part)]
        multi = multi or kind != "single"
        nodes = [r for rec in nodes for r in follow(rows, login, here, rec, part)[1]]
        here = other
    kind = LINKS.get((here, last), ("field",))[0]
    multi = multi or kind not in ("field", "single")
    values = []
    for rec in nodes:
        if kind in ("field", "single"):  # the record's own values and link columns
            values.append(rec[last])
        elif kind == "many":  # the record's own many-link ids
            values += rec[last]
        else:  # an inverse list: the ids of the records the user may read
            values += [r["id"] for r in follow(rows, login, here, rec, last)[1]]
    if not multi:
        return False, values or [None]
    return True, values


def not3(x):
    return None if x is None else not x


def and3(a, b):
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def or3(a, b):
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def check(op: str, x, value):
    """A positive operator on one value, three-valued."""
    if op == "not_null":
        return x is not None
    if x is None:
        return None
    if op == "=":
        return x == value
    if op == "<":
        return x < value
    if op == ">=":
        return x >= value
    if op == "in":
        return x in value
    if op == "between":
        return value[0] <= x <= value[1]
    if op == "startswith":
        return x.casefold().startswith(value.casefold())
    if op == "contains":
        return value.casefold() in x.casefold()
    raise AssertionError(op)


NEGATED = {"!=": "=", "not in": "in", "not between": "between", "is null": "not_null"}


def truth(rows, login, entity: str, record: dict, node):
    kind = node[0]
    if kind == "and":
        return and3(truth(rows, login, entity, record, node[1]), truth(rows, login, entity, record, node[2]))
    if kind == "or":
        return or3(truth(rows, login, entity, record, node[1]), truth(rows, login, entity, record, node[2]))
    if kind == "not":
        return not3(truth(rows, login, entity, record, node[1]))
    if kind == "arith":
        _, left, op, right, k, n = node
        a = reach(rows, login, entity, record, left)[1][0]
        b = reach(rows, login, entity, record, right)[1][0] if right else k
        if a is None or b is None:
            return None
        return check(op, (a * b if right is None else a + b), n)
    _, path, op, value = node
    positive = NEGATED.get(op, op)
    multi, values = reach(rows, login, entity, record, path)
    if multi:
        result = any(check(positive, x, value) is True for x in values)
    else:
        result = check(positive, values[0], value)
    return not3(result) if op in NEGATED else result


def oracle(rows, login, entity: str, node) -> list[int]:
    return sorted(
        r["id"]
        for r in rows[entity].values()
        if may_read(login, entity, r) and truth(rows, login, entity, r, node) is True
    )


# -- filters -----------------------------------------------------------------------------------
def show(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def render(node) -> str:
    kind = node[0]
    if kind in ("and", "or"):
        return f"({render(node[1])} {kind} {render(node[2])})"
    if kind == "not":
        return f"not ({render(node[1])})"
    if kind == "arith":
        _, left, op, right, k, n = node
        return f"{left} {'+ ' + right if right else '* ' + str(k)} {op} {n}"
    _, path, op, value = node
    if op in ("is null", "not_null"):
        return f"{path} {'is not null' if op == 'not_null' else 'is null'}"
    if op in ("in", "not in"):
        return f"{path} {op} ({', '.join(map(show, value))})"
    if op in ("between", "not between"):
        return f"{path} {op} {show(value[0])} and {show(value[1])}"
    return f"{path} {op} {show(value)}"


def atoms(root: str):
    def for_path(item):
        path, kind = item
        pool = {TEXT: WORDS, NUMBER: NUMBERS, MONEY: MONEYS, ID: list(range(1, 16))}[kind]
        one = st.sampled_from(pool)
        ops = [
            st.tuples(st.just(path), st.sampled_from(["=", "!="]), one),
            st.tuples(st.just(path), st.sampled_from(["in", "not in"]), st.lists(one, min_size=1, max_size=3)),
            st.tuples(st.just(path), st.sampled_from(["is null", "not_null"]), st.none()),
        ]
        if kind == TEXT:
            ops.append(st.tuples(st.just(path), st.sampled_from(["startswith", "contains"]), st.sampled_from(PATTERNS)))
        if kind in (NUMBER, MONEY):
            ops.append(st.tuples(st.just(path), st.sampled_from(["<", ">="]), one))
            pair = st.tuples(one, one).map(sorted).map(tuple)
            ops.append(st.tuples(st.just(path), st.sampled_from(["between", "not between"]), pair))
        return st.one_of(ops).map(lambda t: ("atom", *t))

    found = st.sampled_from(PATHS[root]).flatmap(for_path)
    numeric = ARITHMETIC[root]
    if numeric:
        times = st.tuples(st.sampled_from(numeric), st.sampled_from(["=", "<", ">="]), st.sampled_from(NUMBERS))
        found = found | times.map(lambda t: ("arith", t[0], t[1], None, 2, t[2]))
        if len(numeric) > 1:
            plus = st.tuples(st.sampled_from(["=", "<", ">="]), st.sampled_from(NUMBERS))
            found = found | plus.map(lambda t: ("arith", numeric[0], t[0], numeric[1], None, t[1]))
    return found


def filters(root: str):
    return st.recursive(
        atoms(root),
        lambda inner: st.one_of(
            st.tuples(st.sampled_from(["and", "or"]), inner, inner),
            inner.map(lambda n: ("not", n)),
        ),
        max_leaves=4,
    )


LOGINS = [None, *USERS]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_filters_through_links_see_only_readable_records(world, data) -> None:
    crm, rows = world
    login = data.draw(st.sampled_from(LOGINS), label="user")
    root = data.draw(st.sampled_from(sorted(PATHS)), label="entity")
    node = data.draw(filters(root), label="filter")
    where = render(node)
    user = crm.as_user(login)
    if scope(crm.model, user.actor, root, "read") == "none":  # no read right at all: refused, not empty
        assert oracle(rows, login, root, node) == []
        with pytest.raises(metacrm.PermissionDenied, match=f"may not read {root} records"):
            user.find(root, where)
        return
    got = sorted(r["id"] for r in user.find(root, where))
    assert got == oracle(rows, login, root, node), (login, root, where)


def test_the_oracle_sees_what_the_system_sees(world) -> None:
    """The oracle is not vacuous: for the system it finds records through every path kind."""
    crm, rows = world
    for root, paths in PATHS.items():
        for path, _kind in paths:
            node = ("atom", path, "not_null", None)
            assert sorted(r["id"] for r in crm.find(root, render(node))) == oracle(rows, None, root, node), path
    some = [oracle(rows, None, root, ("atom", path, "not_null", None)) for root in PATHS for path, _ in PATHS[root]]
    assert sum(1 for found in some if found) >= len(some) - 2
