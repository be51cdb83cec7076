"""CLI defects a newcomer hit (issue 14, item 7), on SQLite and PostgreSQL: read-only
commands never create a database; unlinking nothing leaves the version; `update --version`;
messages in the user's words; counts in the singular; no `<bool>` in `--help`; one duplicate
warning per `create_many`."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

import metacrm
from metacrm.cli.main import app

CONTRACT = str(Path(__file__).parent / "fixtures" / "valid" / "contract.yaml")


def invoke(*args: str, code: int = 0):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def crm(db_url):
    crm = metacrm.connect(CONTRACT, db_url)
    crm.migrate()
    yield crm
    crm.close()


def opts(crm) -> list[str]:
    return ["--model", CONTRACT, "--db", crm.engine.url.render_as_string(hide_password=False)]


@pytest.mark.parametrize(
    "command",
    [
        ["list", "deal"],
        ["get", "deal", "1"],
        ["export", "deal"],
        ["board", "deal"],
        ["user", "list"],
        ["create", "client", "name=x"],
    ],
)
def test_a_mistyped_sqlite_file_is_refused_and_never_created(tmp_path: Path, command) -> None:
    typo = tmp_path / "typo.db"
    result = invoke(*command, "--model", CONTRACT, "--db", f"sqlite:///{typo}", code=1)
    assert result.stderr == f"error: no database at {typo}: check --db (or $METACRM_DB); `metacrm migrate` creates it\n"
    assert not typo.exists()


def test_dump_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    result = invoke("dump", str(tmp_path / "out"), "--db", f"sqlite:///{typo}", code=1)
    assert "no database at" in result.stderr and not typo.exists() and not (tmp_path / "out").exists()


def test_a_dry_run_creates_no_database_and_no_table(db_url, tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    result = invoke("migrate", "--dry-run", "--model", CONTRACT, "--db", db_url)
    assert "add entity" in result.stdout
    if db_url.startswith("sqlite"):
        assert "the plan is for a new one; nothing was created" in result.stderr
        assert not (tmp_path / "crm.db").exists()
    else:
        engine = create_engine(db_url)
        try:
            assert inspect(engine).get_table_names() == []
        finally:
            engine.dispose()
    invoke("migrate", "--model", CONTRACT, "--db", db_url)  # a real migrate still creates it


def test_unlinking_nothing_is_refused_and_relinking_keeps_the_version(crm) -> None:
    c = crm.create("client", {"name": "A"})
    d = crm.create("deal", {"title": "D", "client": c["id"]})
    t = crm.create("task", {"title": "T"})
    p = crm.create("product", {"name": "P"})
    o = opts(crm)
    for args in (["task", str(t["id"]), "subject"], ["deal", str(d["id"]), "products"]):
        result = invoke("unlink", *args, *o, code=1)
        assert "is not linked to anything through" in result.stderr and "nothing to unlink" in result.stderr
    assert crm.get("task", t["id"])["version"] == 1 and crm.get("deal", d["id"])["version"] == 1
    invoke("link", "deal", str(d["id"]), "products", str(p["id"]), *o)
    invoke("link", "deal", str(d["id"]), "products", str(p["id"]), *o)  # already there
    invoke("link", "deal", str(d["id"]), "client", str(c["id"]), *o)  # already its client
    assert crm.get("deal", d["id"])["version"] == 2


def test_update_with_a_stale_version_is_refused_and_writes_nothing(crm) -> None:
    c = crm.create("client", {"name": "A"})
    crm.update("client", c["id"], {"city": "Омск"})  # now at version 2
    o = opts(crm)
    stale = invoke("update", "client", str(c["id"]), "name=B", "--version", "1", *o, code=1)
    assert stale.stderr.startswith("error: client 1 was changed by someone else (version 2, you had 1)")
    assert crm.get("client", c["id"])["name"] == "A"
    fresh = invoke("update", "client", str(c["id"]), "name=B", "--version", "2", "-f", "json", *o)
    assert '"version": 3' in fresh.stdout and crm.get("client", c["id"])["name"] == "B"


def test_messages_use_the_users_words_not_pythons(crm, tmp_path: Path) -> None:
    o = opts(crm)
    with pytest.raises(metacrm.ValidationError) as refused:
        crm.get("task", {"entity": "deal", "id": 5})
    assert "deal:5 is not a record id" in str(refused.value) and "{" not in str(refused.value)
    bad = invoke("get", "deal", "abc", *o, code=1)
    assert "'abc' is not a record id" in bad.stderr
    staged = tmp_path / "deals.csv"
    staged.write_text("title,client,stage\nA,1,won\n", encoding="utf-8")
    crm.create("client", {"name": "A"})
    refused_import = invoke("import", "deal", str(staged), *o, code=1)
    assert "--with-stages" in refused_import.stderr
    c = crm.create("client", {"name": "B"})
    crm.create("deal", {"title": "D", "client": c["id"]})
    blocked = invoke("delete", "client", str(c["id"]), *o, code=1)
    assert blocked.stderr.startswith(f"error: cannot delete: client {c['id']} is linked from deal")


def test_counts_are_singular_for_one(crm, tmp_path: Path) -> None:
    o = opts(crm)
    crm.create("client", {"name": "A"})
    assert invoke("list", "client", *o).stdout.endswith("(1 record)\n")
    one = tmp_path / "one.csv"
    one.write_text("name\nB\n", encoding="utf-8")
    assert invoke("import", "client", str(one), *o).stdout == "imported 1 client record; 0 rejected\n"
    out = tmp_path / "c.csv"
    invoke("export", "product", "--output", str(out), *o)
    assert "exported 0 product records" in CliRunner().invoke(app, ["export", "product", "-o", str(out), *o]).stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        Path(CONTRACT)
        .read_text(encoding="utf-8")
        .replace("search: [name, email, phone]", "search: [name, emial, phone]")
    )
    assert "invalid (1 error)" in invoke("check", str(bad), code=2).stdout


def test_help_shows_no_value_type_on_flags() -> None:
    for command in (["--help"], ["list", "--help"], ["migrate", "--help"], ["import", "--help"]):
        text = invoke(*command).stdout
        assert "<bool>" not in text and "--help" in text


def test_create_many_warns_once_for_all_its_duplicates(db_url, tmp_path: Path) -> None:
    model = tmp_path / "m.yaml"
    model.write_text(
        "metacrm: 1\nname: d\nentities:\n  client:\n    fields:\n      name: {type: string}\n"
        "    duplicates:\n      - {field: name, match: name, action: warn}\n",
        encoding="utf-8",
    )
    with metacrm.connect(model, db_url) as crm:
        crm.migrate()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            crm.create_many("client", [{"name": "Ромашка"} for _ in range(40)])
        assert len(caught) == 1
        warning = caught[0].message
        assert isinstance(warning, metacrm.DuplicateWarning) and len(warning.matches) == 39
        assert str(warning).startswith("39 matches of a warn duplicate rule, stored: client record 1:")
        assert str(warning).endswith("(and 36 more)")
        assert crm.count("client") == 40


def test_user_disable_enable_and_remove(crm) -> None:
    from metacrm.runtime.passwords import set_password, verify_password
    from metacrm.runtime.tokens import authenticate, create_token

    o = opts(crm)
    for login in ("anna", "boris"):
        invoke("user", "add", login, "--role", "manager", *o)
    set_password(crm, "anna", "correct horse battery")
    secret = create_token(crm, "anna")["token"]
    for name in ("A", "B"):
        crm.create("client", {"name": name, "owner": "anna"})
    assert verify_password(crm, "anna", "correct horse battery")

    invoke("user", "disable", "anna", *o)
    assert not verify_password(crm, "anna", "correct horse battery")  # no sign-in
    assert authenticate(crm, secret) == "anna"
    with pytest.raises(metacrm.NotFound, match="user 'anna' is disabled"):
        crm.as_user("anna")  # what the API and the browser app act through: 401, back to sign-in
    refused = invoke("list", "client", "--as", "anna", *o, code=1)
    assert "user 'anna' is disabled" in refused.stderr
    listed = invoke("user", "list", "-f", "csv", *o).stdout
    assert "anna,,manager,,,true" in listed and "boris,,manager,,,false" in listed
    assert crm.count("client", "owner = 'anna'") == 2  # the records stay hers

    invoke("user", "enable", "anna", *o)
    assert verify_password(crm, "anna", "correct horse battery")
    assert invoke("list", "client", "--as", "anna", "-f", "json", *o).stdout.count('"owner": "anna"') == 2

    before = crm.find("client")
    refused = invoke("user", "remove", "anna", *o, code=1)
    assert refused.stderr == (
        "error: user 'anna' owns 2 records (client 2): give --reassign-to LOGIN to hand them over, "
        "or disable the user instead (metacrm user disable anna)\n"
    )
    assert crm.find("client") == before and "anna" in {u["login"] for u in crm.users()}
    invoke("user", "remove", "anna", "--reassign-to", "nobody", *o, code=1)
    assert crm.find("client") == before
    done = invoke("user", "remove", "anna", "--reassign-to", "boris", *o)
    assert done.stdout == "user anna removed; 2 records now owned by boris\n"
    assert {c["owner"] for c in crm.find("client")} == {"boris"}
    assert [u["login"] for u in crm.users()] == ["boris"]
    assert authenticate(crm, secret) is None and not verify_password(crm, "anna", "correct horse battery")
    invoke("user", "remove", "anna", *o, code=1)  # no such user any more
    with pytest.raises(metacrm.PermissionDenied):
        crm.as_user("boris").disable_user("boris")
