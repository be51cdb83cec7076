"""Row-level access on SQLite and PostgreSQL: for each read path and write action, `own` sees
and changes only own records, `team` only the team's, `none` nothing; filters through links
and inverse lists cannot widen what a user sees; refusals write nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

import metacrm

MODEL = Path(__file__).parent / "fixtures" / "valid" / "access.yaml"


@pytest.fixture
def world(db_url):
    crm = metacrm.connect(MODEL, db_url)
    crm.migrate()
    for login, roles, team in [
        ("anna", ["manager"], "north"),
        ("boris", ["manager"], "north"),
        ("gleb", ["manager"], "south"),
        ("vera", ["lead"], "north"),
        ("olga", ["viewer"], None),
        ("dir", ["director"], None),
    ]:
        crm.add_user(login, roles=roles, team=team)
    ids = {}
    for owner in ("anna", "boris", "gleb"):
        c = crm.create("client", {"name": f"Клиент {owner}", "city": "Москва", "owner": owner})
        d = crm.create("deal", {"title": f"Сделка {owner}", "amount": "100", "client": c["id"], "owner": owner})
        ids[owner] = (c["id"], d["id"])
    # boris's deal on anna's client: anna must not see it through her client's inverse list
    ids["cross"] = crm.create("deal", {"title": "Чужая", "client": ids["anna"][0], "owner": "boris"})["id"]
    crm.create("product", {"name": "Сервер"})
    yield crm, ids
    crm.close()


def names(rows, key="name"):
    return sorted(r[key] for r in rows)


def test_read_paths_by_scope(world) -> None:
    crm, ids = world
    anna, vera, olga, boss = (crm.as_user(u) for u in ("anna", "vera", "olga", "dir"))
    assert names(anna.find("client")) == ["Клиент anna"]
    assert anna.count("client") == 1 and anna.count("deal") == 1
    assert names(vera.find("client")) == ["Клиент anna", "Клиент boris"]  # team north
    assert names(olga.find("client")) == ["Клиент anna", "Клиент boris", "Клиент gleb"]
    for read in (olga.find, olga.count):  # no deal permission at all: refused, not an empty answer
        with pytest.raises(metacrm.PermissionDenied, match=r"may not read deal records \(scope for read: none\)"):
            read("deal")
    assert boss.count("deal") == 4
    assert anna.find("product") == []  # `own` on an entity without owners: fail closed


def test_link_filters_and_inverse_lists_do_not_widen(world) -> None:
    crm, ids = world
    anna = crm.as_user("anna")
    assert names(anna.find("deal", where="client.name contains 'клиент'"), "title") == ["Сделка anna"]
    assert names(anna.find("client", where="deals.title = 'Сделка gleb'")) == []
    assert names(anna.related("client", ids["anna"][0], "deals"), "title") == ["Сделка anna"]
    card = anna.card("client", ids["anna"][0])
    assert [d["title"] for d in card["related"]["deals"]] == ["Сделка anna"]
    gleb_card = crm.as_user("olga").card("client", ids["gleb"][0])
    assert gleb_card["related"]["deals"] == []  # olga reads clients, not deals


def test_get_history_and_moves_of_others_refused(world) -> None:
    crm, ids = world
    anna = crm.as_user("anna")
    with pytest.raises(metacrm.PermissionDenied, match="anna"):
        anna.get("client", ids["boris"][0])
    with pytest.raises(metacrm.PermissionDenied):
        anna.history("deal", ids["boris"][1])
    with pytest.raises(metacrm.PermissionDenied):
        anna.allowed_moves("deal", ids["gleb"][1])
    assert anna.get("client", ids["anna"][0])["owner"] == "anna"


def snapshot(crm):
    return [crm.find(e) for e in crm.model.entities]


def test_writes_by_scope_and_nothing_written_on_refusal(world) -> None:
    crm, ids = world
    anna, vera, gleb = crm.as_user("anna"), crm.as_user("vera"), crm.as_user("gleb")
    before = snapshot(crm)
    refusals = [
        lambda: anna.update("client", ids["boris"][0], {"city": "Тверь"}),  # own only
        lambda: anna.delete("client", ids["anna"][0]),  # delete: none
        lambda: anna.move("deal", ids["boris"][1], "won"),  # move own only
        lambda: gleb.move("deal", ids["anna"][1], "lost"),
        lambda: anna.update("client", ids["anna"][0], {"owner": "boris"}),  # reassign: none
        lambda: anna.create("deal", {"title": "x", "owner": "boris"}),  # create own only
        lambda: vera.update("client", ids["gleb"][0], {"city": "Тверь"}),  # team north only
        lambda: vera.create("client", {"name": "x"}),  # lead may not create clients
        lambda: crm.as_user("olga").update("client", ids["anna"][0], {"city": "x"}),
    ]
    for refuse in refusals:
        with pytest.raises(metacrm.PermissionDenied):
            refuse()
    # a record the user may not read cannot be linked to; said as "no such record" (no probing)
    with pytest.raises(metacrm.ValidationError, match="no client with id"):
        anna.link("client", ids["boris"][0], "deals", ids["anna"][1])
    with pytest.raises(metacrm.ValidationError, match="no client with id"):
        anna.create("deal", {"title": "x", "client": ids["gleb"][0]})
    assert snapshot(crm) == before
    # what the scopes do allow
    assert anna.update("client", ids["anna"][0], {"city": "Тверь"})["city"] == "Тверь"
    assert anna.create("deal", {"title": "Моя"})["owner"] == "anna"
    assert anna.move("deal", ids["anna"][1], "won")["stage"] == "won"
    assert vera.move("deal", ids["boris"][1], "lost")["stage"] == "lost"  # team north
    assert vera.update("client", ids["boris"][0], {"owner": "anna"})["owner"] == "anna"  # reassign: team
    assert crm.as_user("dir").delete("deal", ids["gleb"][1]) == {"deal": [ids["gleb"][1]]}


def test_unknown_user_and_role(world) -> None:
    crm, _ = world
    with pytest.raises(metacrm.NotFound):
        crm.as_user("nobody")
    with pytest.raises(metacrm.ValidationError, match="unknown role 'manger'.*did you mean 'manager'"):
        crm.add_user("x", roles=["manger"])


def test_cli_users_and_as(world, db_url) -> None:
    from typer.testing import CliRunner

    from metacrm.cli.main import app

    runner = CliRunner()
    base = ["--model", str(MODEL), "--db", db_url]
    result = runner.invoke(app, ["user", "add", "ira", "--role", "manager", "--team", "south", *base])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["user", "list", "--format", "json", *base])
    assert {"login": "ira", "name": None, "roles": ["manager"], "team": "south", "email": None, "disabled": False} in __import__("json").loads(
        listed.stdout
    )
    mine = runner.invoke(app, ["list", "client", "--as", "anna", "--format", "json", *base])
    assert [c["name"] for c in __import__("json").loads(mine.stdout)] == ["Клиент anna"]
    refused = runner.invoke(app, ["update", "client", str(world[1]["boris"][0]), "city=X", "--as", "anna", *base])
    assert refused.exit_code == 1 and "may not update client" in refused.stderr
    unknown = runner.invoke(app, ["list", "client", "--as", "nobody", *base])
    assert unknown.exit_code == 1 and "no user 'nobody'" in unknown.stderr
    bad_role = runner.invoke(app, ["user", "add", "x", "--role", "manger", *base])
    assert bad_role.exit_code == 1 and "did you mean 'manager'" in bad_role.stderr


def test_export_and_import_scopes(world, tmp_path) -> None:
    from metacrm.io import export_csv, import_csv

    crm, _ = world
    crm.set_user("anna", roles=["manager"])
    out = tmp_path / "clients.csv"
    with out.open("w", encoding="utf-8", newline="") as fh:
        with pytest.raises(metacrm.PermissionDenied, match=r"may not export client records \(scope for export: none\)"):
            export_csv(crm.as_user("olga"), "client", fh)  # read: all, export: none: refused, not empty
    with out.open("w", encoding="utf-8", newline="") as fh:
        assert export_csv(crm.as_user("dir"), "client", fh) == 3
    before = crm.count("client")
    with pytest.raises(metacrm.PermissionDenied):
        import_csv(crm.as_user("anna"), "client", out)  # create: all, but import: none
    assert crm.count("client") == before


def test_reports_and_board_respect_access(world) -> None:
    crm, ids = world
    anna, vera, boss = crm.as_user("anna"), crm.as_user("vera"), crm.as_user("dir")
    crm.move("deal", ids["gleb"][1], "won")
    assert boss.funnel("deal")["stages"][0]["reached"] == 4
    assert anna.funnel("deal")["stages"][0]["reached"] == 1  # her one deal
    assert vera.funnel("deal")["stages"][0]["reached"] == 3  # team north: anna's, boris's and his cross deal
    assert sum(c["count"] for c in anna.board("deal")["columns"]) == 1
    assert [r["title"] for c in anna.board("deal")["columns"] for r in c["records"]] == ["Сделка anna"]
    assert {row["value"] for row in anna.report_group("deal", "owner")["rows"]} == {"anna"}
    assert anna.funnel("deal")["win_rate"] is None  # gleb's won deal is not hers
    assert crm.as_user("olga").funnel("deal")["stages"][0]["reached"] == 0
