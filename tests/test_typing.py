"""metacrm is typed: ``mypy --strict`` passes on a client using every public method
(tests/typing/client.py) and reports each mistake of tests/typing/misuse.py; the TypedDicts of
metacrm.types describe what the methods really return (on SQLite and PostgreSQL); py.typed
ships in the wheel."""

from __future__ import annotations

import ast
import datetime as dt
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import types
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest

import metacrm
from metacrm import types as documents

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "tests" / "typing"


def _load_client() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("metacrm_typing_client", SCRIPTS / "client.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = _load_client()


# -- mypy --strict ---------------------------------------------------------------------------------
def _mypy(script: Path) -> subprocess.CompletedProcess[str]:
    """One mypy --strict run on a script, against this checkout's metacrm (MYPYPATH), its
    errors in metacrm itself not reported (as for an installed package). The cache lives in
    the temp directory, so a second run takes seconds."""
    cache = Path(tempfile.gettempdir()) / f"metacrm-mypy-cache-{os.getuid() if hasattr(os, 'getuid') else 0}"
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    command = [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--cache-dir", str(cache)]
    command += ["--no-color-output", "--no-error-summary", "--hide-error-context", str(script)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_mypy_strict_passes_on_the_client_and_catches_each_misuse() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    done = _mypy(SCRIPTS / "client.py")
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr

    misuse = SCRIPTS / "misuse.py"
    expected = {
        (number, code)
        for number, line in enumerate(misuse.read_text(encoding="utf-8").splitlines(), start=1)
        for code in re.findall(r"# E: ([a-z-]+)", line)
    }
    assert len(expected) >= 15
    done = _mypy(misuse)
    reported = {
        (int(m["line"]), m["code"])
        for m in re.finditer(r"^tests/typing/misuse\.py:(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$", done.stdout, re.M)
    }
    assert done.returncode == 1, done.stdout + done.stderr
    assert reported == expected, f"missing: {sorted(expected - reported)}, unexpected: {sorted(reported - expected)}"


def test_the_client_uses_every_public_method() -> None:
    """A public method of CRM added without a use in the client escapes the mypy check: the
    client must call each (and the top-level functions)."""
    from metacrm.runtime.crm import CRM

    tree = ast.parse((SCRIPTS / "client.py").read_text(encoding="utf-8"))
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    public = {name for name in dir(CRM) if not name.startswith("_")}
    assert public - used == set()
    assert {"connect", "load_model", "HIDDEN", "__version__"} <= used


def test_the_client_runs(db_url: str) -> None:
    client.main(db_url)


# -- the TypedDicts against what the methods return --------------------------------------------------
def problems(value: Any, tp: Any, where: str = "") -> list[str]:
    """What in ``value`` does not fit the type ``tp`` (a TypedDict, list, dict, union, class)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object:
        return []
    if origin in (Union, types.UnionType):
        fits = [problems(value, option, where) for option in args]
        return [] if any(not p for p in fits) else [f"{where}: {value!r} is none of {tp}"]
    if tp is None or tp is type(None):
        return [] if value is None else [f"{where}: {value!r} is not None"]
    if is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not a {tp.__name__}"]
        hints = get_type_hints(tp)
        out = [f"{where}: {tp.__name__} lacks key {k!r}" for k in sorted(tp.__required_keys__ - value.keys())]
        out += [f"{where}: {tp.__name__} has no key {k!r}" for k in sorted(value.keys() - hints.keys())]
        for key in value.keys() & hints.keys():
            out += problems(value[key], hints[key], f"{where}.{key}")
        return out
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, not a list"]
        return [p for i, item in enumerate(value) for p in problems(item, args[0], f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not a dict"]
        return [p for k, v in value.items() for p in problems(k, args[0], where) + problems(v, args[1], f"{where}.{k}")]
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    return [] if ok else [f"{where}: {value!r} is not {tp.__name__}"]


def test_problems_sees_what_does_not_fit() -> None:
    move = {"stage": "won", "label": "Won", "kind": "won", "possible": True, "reasons": []}
    assert problems(move, documents.AllowedMove) == []
    assert problems({**move, "reopen": True}, documents.AllowedMove) == []
    assert problems({**move, "possible": 1}, documents.AllowedMove) == [".possible: 1 is not bool"]
    assert problems({k: v for k, v in move.items() if k != "kind"}, documents.AllowedMove) == [
        ": AllowedMove lacks key 'kind'"
    ]
    assert problems({**move, "extra": 1}, documents.AllowedMove) == [": AllowedMove has no key 'extra'"]
    assert problems([move, None], list[documents.AllowedMove]) == ["[1]: NoneType, not a AllowedMove"]
    assert problems(Decimal("1.50"), Decimal | None) == [] and problems("1.50", Decimal | None) != []


def test_documents_match_their_typeddicts(db_url: str) -> None:
    crm = client.open_crm(db_url)
    try:
        client.users(crm)
        crm.add_user("boss", roles=["director"])
        anna = crm.as_user("anna")
        own = anna.create("client", {"name": "Anna's client"})
        anna.create("deal", {"title": "Hers", "client": own["id"], "amount": "10.00"})
        first, deal = client.records(crm)
        # a deal of anna's at a client she may not read: her reports show it as hidden
        crm.create("deal", {"title": "Assigned", "client": first["id"], "owner": "anna", "amount": "5.00"})
        crm.update("deal", deal["id"], {"lost_reason": "price"})
        crm.move("deal", deal["id"], "lost")
        crm.as_user("boss").move("deal", deal["id"], "new")  # a reopen
        crm.move("deal", deal["id"], "lost")
        crm.note("deal", deal["id"], "called", kind="call")
        task = crm.create("task", {"title": "Call", "subject": {"entity": "deal", "id": deal["id"]}, "due": "2020-01-02"})
        checks: list[tuple[str, Any, Any]] = [
            ("user_info", crm.user_info("anna"), documents.UserInfo),
            ("users", crm.users(), list[documents.UserInfo]),
            ("allowed_moves", crm.allowed_moves("deal", deal["id"]), list[documents.AllowedMove]),
            ("history", crm.history("deal", deal["id"]), list[documents.HistoryEntry]),
            ("note", crm.note("deal", deal["id"], "hello"), documents.JournalEntry),
            ("timeline", crm.timeline("deal", deal["id"]), list[documents.TimelineEntry]),
            ("timeline via", crm.timeline("client", first["id"]), list[documents.TimelineEntry]),
            ("funnel", crm.funnel("deal", date_from="2000-01-01", as_of=dt.date.today()), documents.Funnel),
            ("funnel by", crm.funnel("deal", by="client"), list[documents.FunnelGroup]),
            ("funnel hidden", anna.funnel("deal", by="client"), list[documents.FunnelGroup]),
            ("group", crm.report_group("deal", "stage", sum="amount", period="quarter"), documents.GroupReport),
            ("group hidden", anna.report_group("deal", "client"), documents.GroupReport),
            ("board", crm.board("deal"), documents.Board),
            ("card", crm.card("deal", deal["id"]), documents.Card),
            ("card related", crm.card("client", first["id"]), documents.Card),
            ("card whole", crm.card("deal", deal["id"], moves=True, timeline=5), documents.Card),
            ("search", crm.search("acme"), list[documents.SearchHit]),
            ("tasks", crm.tasks(include_done=True), list[documents.Task]),
            ("tick", crm.tick(now=dt.datetime.now(dt.UTC)), list[documents.Fired]),
            ("outbox", crm.outbox(), list[documents.OutboxMessage]),
            ("deliver", crm.deliver(webhooks=False), documents.DeliveryReport),
            ("find_duplicates", crm.find_duplicates("client", {"name": "Acme"}), list[documents.DuplicateMatch]),
            ("duplicates", crm.duplicates("client"), list[documents.DuplicateGroup]),
            ("recorded_model", crm.recorded_model(), documents.RecordedModel),
            ("delete", crm.delete("task", task["id"]), dict[str, list[int]]),
            ("forms", crm.forms(), list[documents.FormInfo]),
            ("submit_form", client.forms(crm), documents.FormSubmission),
            ("submit_form again", crm.submit_form("callback", {"name": "Delta"}), documents.FormSubmission),
        ]
        found = {name: problems(value, tp, name) for name, value, tp in checks}
        assert {name: p for name, p in found.items() if p} == {}
        # the optional keys are exercised, not only allowed
        assert [m["stage"] for m in crm.allowed_moves("deal", deal["id"]) if m.get("reopen")] == ["new"]
        assert any(g.get("hidden") for g in anna.funnel("deal", by="client"))
        assert any(r.get("hidden") for r in anna.report_group("deal", "client")["rows"])
        assert all("period" in r and "sum" in r for r in crm.report_group("deal", "stage", sum="amount", period="month")["rows"])
    finally:
        crm.close()


def test_every_document_type_is_exported() -> None:
    declared = {
        name
        for name, value in vars(documents).items()
        if not name.startswith("_") and (is_typeddict(value) or name in ("Record", "When"))
    }
    assert declared == set(documents.__all__)
    assert typing.get_type_hints(documents.FunnelGroup)["stages"] == list[documents.FunnelStage]


def test_the_package_is_marked_typed_and_exports_crm() -> None:
    assert (ROOT / "metacrm" / "py.typed").is_file()
    from metacrm.runtime.crm import CRM

    assert metacrm.CRM is CRM and "CRM" in metacrm.__all__ and "FieldIssue" in metacrm.__all__
    assert metacrm.FieldIssue("deal", "amount", "is negative").format() == "deal.amount: is negative"
