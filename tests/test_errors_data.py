"""Exceptions are data: every public exception class (found in metacrm.errors and metacrm, so a
new one is covered without touching this file) pickles and unpickles to an object of the same
class with the same message and attributes, also across a process pool; and the errors real
failures raise on SQLite and PostgreSQL (a stale version, a refused move, a permission denied, a
missing record, a bad value, a failing automation) carry the documented structured attributes."""

from __future__ import annotations

import inspect
import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest

import metacrm
import metacrm.errors
from metacrm.errors import FieldIssue, Problem

MODEL = """\
metacrm: 1
name: errs
entities:
  client:
    owner: true
    fields:
      name: {type: string, required: true}
      email: {type: email}
  deal:
    owner: true
    fields:
      title: {type: string, required: true}
      amount: {type: money, min: 0}
      note: {type: text}
    links:
      client: {to: client, inverse: deals}
    stages:
      initial: new
      states:
        new: {}
        proposal: {requires: [amount]}
        won: {kind: won}
      transitions:
        new: [proposal]
        proposal: [won]
  task:
    fields:
      title: {type: string, required: true}
roles:
  manager:
    client: {read: own, create: all, update: own}
    deal: {read: own, create: own, update: own, move: own}
automations:
  boom:
    when: {entity: deal, enters: won}
    do:
      - create: task
        values: {title: $record.note}
"""


def public_exceptions() -> list[type[BaseException]]:
    found = {}
    for module in (metacrm.errors, metacrm):
        names = [n for n in dir(module) if not n.startswith("_")]
        for name in names:
            value = getattr(module, name)
            if inspect.isclass(value) and issubclass(value, BaseException):
                found[value.__qualname__] = value
    return [found[name] for name in sorted(found)]


def test_every_public_exception_is_found() -> None:
    names = {cls.__name__ for cls in public_exceptions()}
    assert {"MetaCRMError", "ModelError", "AutomationError", "DuplicateWarning", "ConnectionLost"} <= names
    assert set(metacrm.errors.__all__) - {"Problem", "FieldIssue"} <= names


# a value for every parameter an exception's __init__ takes; a class with a parameter not listed
# here fails the round trip test, naming it, so that it gets a sample and is checked
SAMPLES: dict[str, object] = {
    "message": "something went wrong: ООО «Ромашка»",
    "problems": [
        Problem("link.unknown_target", "unknown entity 'x'", "m.yaml", 3, 5, loc=("entities", "deal")),
        Problem("field.odd", "odd", severity="warning", hint="rename it"),
    ],
    "issues": [FieldIssue("client", "email", "is not an e-mail address", "nope", 2)],
    "allowed": [{"stage": "won", "possible": False, "reasons": ["amount is required"]}],
    "position": 7,
    "entity": "deal",
    "record_id": 42,
    "field": "amount",
    "stage": "won",
    "current": "new",
    "reasons": ["amount is required"],
    "action": 2,
    "user": "anna",
    "expected_version": 3,
    "actual_version": 4,
    "retryable": True,
    "retry_after": 30,
    "matches": [{"entity": "client", "id": 3, "field": "email", "rule": "email"}],
    "automation": "boom",
    "chain": ("first", "second"),
    "index": 1,
    "existing": 17,
    "extra": "png",
    "module": "matplotlib",
}


def build(cls: type[BaseException]) -> BaseException:
    args, kwargs = [], {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name == "args" and cls.__init__ is BaseException.__init__:
            continue
        assert name in SAMPLES, f"{cls.__name__}.__init__ takes '{name}': add a sample value to SAMPLES"
        if param.kind == param.KEYWORD_ONLY:
            kwargs[name] = SAMPLES[name]
        else:
            args.append(SAMPLES[name])
    if cls.__init__ in (BaseException.__init__, Exception.__init__) or not args and not kwargs:
        return cls(SAMPLES["message"])
    return cls(*args, **kwargs)


def same(a: BaseException, b: BaseException) -> None:
    assert type(a) is type(b)
    assert str(a) == str(b) and a.args == b.args
    assert vars(a) == vars(b)
    assert getattr(a, "retryable", None) == getattr(b, "retryable", None)


@pytest.mark.parametrize("cls", public_exceptions(), ids=lambda c: c.__name__)
def test_round_trip(cls: type[BaseException]) -> None:
    error = build(cls)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        same(error, pickle.loads(pickle.dumps(error, protocol)))


def test_attributes_survive_the_trip() -> None:
    error = metacrm.ConflictError(
        "deal 5 changed", entity="deal", record_id=5, expected_version=1, actual_version=2, retryable=True
    )
    back = pickle.loads(pickle.dumps(error))
    assert (back.entity, back.record_id, back.expected_version, back.actual_version, back.retryable) == (
        "deal",
        5,
        1,
        2,
        True,
    )
    model = pickle.loads(pickle.dumps(build(metacrm.ModelError)))
    assert [p.type for p in model.errors] == ["link.unknown_target"] and len(model.problems) == 2
    assert metacrm.ConnectionLost("gone").retryable and not metacrm.NotFound("x").retryable


def _fail_in_worker(kind: str) -> None:
    if kind == "automation":
        raise metacrm.AutomationError("automation 'boom' failed", automation="boom", action=1, entity="deal")
    raise metacrm.ModelError([Problem("x.y", "bad model")])


@pytest.mark.parametrize("kind", ["automation", "model"])
def test_an_error_in_a_worker_process_reaches_the_parent(kind: str) -> None:
    with ProcessPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_fail_in_worker, kind)
        error = future.exception(timeout=120)
    assert type(error) is (metacrm.AutomationError if kind == "automation" else metacrm.ModelError)
    if kind == "automation":
        assert (error.automation, error.action, error.entity) == ("boom", 1, "deal")
    else:
        assert str(error).endswith("bad model")


# -- real failures carry their attributes ----------------------------------------------------------
@pytest.fixture
def crm(db_url, tmp_path):
    path = tmp_path / "errs.yaml"
    path.write_text(MODEL, encoding="utf-8")
    crm = metacrm.connect(str(path), db_url)
    crm.migrate()
    crm.add_user("anna", roles=["manager"])
    crm.add_user("boris", roles=["manager"])
    yield crm
    crm.close()


def raised(exc_type, fn, *args, **kw):
    with pytest.raises(exc_type) as info:
        fn(*args, **kw)
    error = info.value
    same(error, pickle.loads(pickle.dumps(error)))  # the real one pickles too
    return error


def test_stale_version_update_and_move(crm) -> None:
    deal = crm.create("deal", {"title": "Поставка"})
    crm.update("deal", deal["id"], {"amount": "10"}, version=1)
    error = raised(metacrm.ConflictError, crm.update, "deal", deal["id"], {"amount": "20"}, version=1)
    assert (error.entity, error.record_id, error.expected_version, error.actual_version) == ("deal", deal["id"], 1, 2)
    assert error.retryable is False
    error = raised(metacrm.ConflictError, crm.move, "deal", deal["id"], "proposal", version=1)
    assert (error.entity, error.record_id, error.expected_version, error.actual_version) == ("deal", deal["id"], 1, 2)
    assert error.retryable is False


def test_refused_moves(crm) -> None:
    deal = crm.create("deal", {"title": "Поставка"})
    error = raised(metacrm.TransitionError, crm.move, "deal", deal["id"], "proposal")
    assert (error.entity, error.record_id, error.stage, error.current) == ("deal", deal["id"], "proposal", "new")
    assert any("amount" in reason for reason in error.reasons)
    assert [m["stage"] for m in error.allowed] == ["proposal"]
    error = raised(metacrm.TransitionError, crm.move, "deal", deal["id"], "won")
    assert (error.stage, error.current, error.reasons) == ("won", "new", ())
    error = raised(metacrm.TransitionError, crm.move, "deal", deal["id"], "wonn")
    assert (error.entity, error.stage, error.current) == ("deal", "wonn", "new")
    error = raised(metacrm.TransitionError, crm.move, "deal", deal["id"], "new")
    assert (error.stage, error.current) == ("new", "new")
    assert crm.get("deal", deal["id"])["stage"] == "new"


def test_permission_denied(crm) -> None:
    mine = crm.as_user("boris").create("client", {"name": "Клиент Бориса"})
    error = raised(metacrm.PermissionDenied, crm.as_user("anna").update, "client", mine["id"], {"name": "x"})
    assert (error.action, error.user, error.entity, error.record_id) == ("update", "anna", "client", mine["id"])
    error = raised(metacrm.PermissionDenied, crm.as_user("anna").create, "deal", {"title": "x", "owner": "boris"})
    assert (error.action, error.user, error.entity, error.record_id) == ("create", "anna", "deal", None)
    assert crm.get("client", mine["id"])["name"] == "Клиент Бориса"


def test_not_found(crm) -> None:
    error = raised(metacrm.NotFound, crm.get, "client", 999)
    assert (error.entity, error.record_id) == ("client", 999)
    error = raised(metacrm.NotFound, crm.update, "deal", 12345, {"title": "x"})
    assert (error.entity, error.record_id) == ("deal", 12345)
    error = raised(metacrm.NotFound, crm.get, "clients", 1)
    assert error.entity == "clients" and error.record_id is None


def test_validation(crm) -> None:
    error = raised(metacrm.ValidationError, crm.create, "client", {"name": "Ромашка", "email": "not an address"})
    assert (error.entity, error.field) == ("client", "email")
    assert [(i.entity, i.field) for i in error.issues] == [("client", "email")]
    error = raised(metacrm.ValidationError, crm.create, "deal", {"amount": "-1"})
    assert error.entity == "deal" and error.field is None  # two fields wrong: title and amount
    assert {i.field for i in error.issues} == {"title", "amount"}
    assert crm.count("client") == 0 and crm.count("deal") == 0


def test_automation_failure(crm) -> None:
    deal = crm.create("deal", {"title": "Поставка", "amount": "5"})
    crm.move("deal", deal["id"], "proposal")
    error = raised(metacrm.AutomationError, crm.move, "deal", deal["id"], "won")  # the task gets no title
    assert (error.automation, error.action, error.entity, error.record_id) == ("boom", 1, "deal", deal["id"])
    assert error.retryable is False
    assert crm.get("deal", deal["id"])["stage"] == "proposal" and crm.count("task") == 0
