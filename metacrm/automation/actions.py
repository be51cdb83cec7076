"""Firing automations: conditions checked in batch, records read in batch, then each
firing's actions run in order, in the caller's transaction, as the system user.

An action's writes go through the CRM facade (``create``, ``update``, ``move``) of an *actor*:
a clone of the triggering CRM acting as the system user, joined to the triggering
connection, whose journal entries say ``alice (automation contract_review)``. Its writes are
reacted to in turn, one level deeper in the *chain*; past the depth limit the chain stops
with an AutomationError naming it. Anything an action raises becomes an AutomationError
naming the automation, the action and the cause, and rolls the whole operation back; except a
transient database failure (a deadlock, a serialization failure, a lock wait that ran out, a
lost connection), which is the database's and not the automation's: it propagates as the same
retryable ConflictError or ConnectionLost the operation would raise without automations.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select

from ..errors import AutomationError
from ..model.metamodel import Automation, Entity
from ..runtime import journal
from ..storage.types import now_utc
from . import DEFAULT_DEPTH
from .compiled import Compiled, Rule, recipient_kind
from .context import hidden_from, linked, load_links, load_records, path_values, render, resolve

DEPTH_ENV = "METACRM_AUTOMATION_DEPTH"


def depth_limit() -> int:
    """How deep a chain of automations may go (``METACRM_AUTOMATION_DEPTH``, default 8)."""
    raw = os.environ.get(DEPTH_ENV, "").strip()
    if not raw:
        return DEFAULT_DEPTH
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise AutomationError(f"{DEPTH_ENV} must be a whole number >= 1, not {raw!r}", automation="")
    return value


@dataclass
class Firing:
    """One automation to run for one record."""

    rule: Rule
    entity: str
    record_id: int
    event: str  # created, updated, deleted, enters:STAGE, leaves:STAGE, overdue, sla, at, before
    old: Mapping | None = None  # a deleted record's last values

    @property
    def automation(self) -> Automation:
        return self.rule.automation

    @property
    def key(self) -> tuple:
        return (self.automation.name, self.entity, self.record_id, self.event)


class _Run:
    """State shared by the firings of one batch: the users, the notes to journal."""

    def __init__(self, crm, conn, compiled: Compiled, now: dt.datetime):
        self.crm, self.conn, self.compiled, self.now = crm, conn, compiled, now
        self.storage = crm.storage
        self.model = crm.model
        self._users: dict | None = None

    @property
    def users(self) -> dict[str, dict]:
        """login -> {"email", "roles", "team"}: the users table, read once per batch (it is small)."""
        if self._users is None:
            table = self.storage.user_table
            rows = self.conn.execute(select(table).order_by(table.c.login)).mappings()
            self._users = {
                r["login"]: {
                    "email": r.get("email"),
                    "roles": {x for x in (r["roles"] or "").split(",") if x},
                    "team": r.get("team"),
                }
                for r in rows
            }
        return self._users

    def with_role(self, role: str) -> list[str]:
        return [login for login, u in self.users.items() if role in u["roles"]]

    def hidden_for(self, login: str, links: Mapping) -> frozenset:
        """The linked records (``(entity, id)``) user ``login`` may not read."""
        from ..runtime.access import Actor

        user = self.users[login]
        actor = Actor(login, frozenset(user["roles"]), user["team"])
        members = {u for u, info in self.users.items() if user["team"] and info["team"] == user["team"]} | {login}
        return hidden_from(self.model, actor, links, members)


def fire(crm, conn, compiled: Compiled, firings: Sequence[Firing], *, checked: bool = False, now=None) -> int:
    """Run the firings in order (their ``if:`` too unless ``checked``); returns how many ran."""
    chain = getattr(crm, "_automation_chain", ())
    seen = {step[:4] for step in chain}
    # an automation re-triggered on the same record by the same event in its own chain is a
    # loop (an update action firing its own `updated`): it does not fire again
    firings = [f for f in firings if f.key not in seen]
    if not firings:
        return 0
    run = _Run(crm, conn, compiled, now or now_utc())
    if not checked:
        firings = _conditions(run, firings)
    by_entity: dict[str, set[int]] = defaultdict(set)
    for f in firings:
        if f.old is None:
            by_entity[f.entity].add(f.record_id)
    records = {name: load_records(conn, run.storage, run.model.entities[name], ids) for name, ids in by_entity.items()}
    links: dict[str, dict] = {}
    by_auto: dict[str, list[Firing]] = defaultdict(list)
    for f in firings:
        by_auto[f.automation.name].append(f)
    for name, group in by_auto.items():
        paths = compiled.paths.get(name)
        if paths:
            entity = run.model.entities[group[0].entity]
            ids = [f.record_id for f in group if f.old is None]
            links[name] = load_links(conn, run.storage, entity, ids, paths)
    limit = depth_limit()
    count = 0
    for f in firings:
        record = f.old if f.old is not None else records[f.entity].get(f.record_id)
        if record is None:  # gone meanwhile (deleted by an earlier action)
            continue
        if len(chain) >= limit:
            names = " → ".join([*(step[0] for step in chain), f.automation.name])
            raise AutomationError(
                f"automation chain deeper than {limit} ({DEPTH_ENV}): {names}; an automation's actions keep "
                f"triggering automations",
                automation=f.automation.name,
                chain=tuple(step[0] for step in chain),
                entity=f.entity,
                record_id=f.record_id,
            )
        _run_actions(run, f, dict(record), links.get(f.automation.name, {}).get(f.record_id, {}), chain)
        count += 1
    return count


def _conditions(run: _Run, firings: list[Firing]) -> list[Firing]:
    """The firings whose automation's ``if:`` holds on the record as it is now: one query per
    automation and batch (``id IN (...) AND <if>``); a deleted record's last values are tested
    in Python."""
    from ..runtime.records import BATCH

    passed: dict[str, set[int]] = {}
    groups: dict[str, list[Firing]] = defaultdict(list)
    for f in firings:
        if f.automation.condition:
            groups[f.automation.name].append(f)
    for name, group in groups.items():
        auto = group[0].automation
        ok: set[int] = set()
        live = sorted({f.record_id for f in group if f.old is None})
        if live:
            table = run.storage.table(auto.entity)
            clause = run.compiled.condition_sql(run.storage, auto)
            for start in range(0, len(live), BATCH):
                chunk = live[start : start + BATCH]
                ok.update(run.conn.execute(select(table.c.id).where(table.c.id.in_(chunk), clause)).scalars())
        gone = [f for f in group if f.old is not None]
        if gone:
            from ..expr import compile_python

            predicate = compile_python(run.model, auto.entity, auto.condition, what=f"automation '{name}': if")
            ok.update(f.record_id for f in gone if predicate(f.old))
        passed[name] = ok
    return [f for f in firings if not f.automation.condition or f.record_id in passed[f.automation.name]]


def _by(origin: str | None, auto: Automation) -> str:
    label = f"automation {auto.name}" if origin is None else f"{origin} (automation {auto.name})"
    return label[:100]


def _actor(run: _Run, f: Firing, chain: tuple, origin: str | None, by: str):
    """The CRM that runs the actions: the system user, one level deeper in the chain, its
    journal entries by ``by``. A view private to this firing (its ``_by`` and chain are this
    operation's), sharing the caller's scope: run under ``actor._within(run.conn)`` its
    writes join the triggering transaction."""
    actor = run.crm.as_user(None)
    actor._by = by
    actor._automation_chain = (*chain, (*f.key, by))
    actor._automation_origin = origin
    return actor


def _transient(exc: Exception):
    """The retryable metacrm error a transient database failure is (itself when it already is
    one), or None."""
    from ..runtime.engine import translate

    error = exc if getattr(exc, "retryable", False) else translate(exc)
    return error if error is not None and error.retryable else None


def _verb(action: Mapping) -> str:
    return next((v for v in ("create", "update", "move", "notify") if v in action), "?")


def _run_actions(run: _Run, f: Firing, record: dict, links: dict, chain: tuple) -> None:
    auto = f.automation
    origin = getattr(run.crm, "_automation_origin", run.crm.user)
    by = _by(origin, auto)
    actor = _actor(run, f, chain, origin, by)
    entity = run.model.entities[f.entity]
    notes: list[str] = []
    with actor._within(run.conn):  # the actions' writes join the triggering transaction
        for index, action in enumerate(auto.actions):
            verb = _verb(action)
            try:
                if verb == "create":
                    _create(run, actor, f, entity, record, links, action, origin, notes)
                elif verb == "update":
                    fresh = _update(run, actor, f, entity, record, links, action["update"])
                    if fresh is not None:
                        record = fresh
                elif verb == "move":
                    fresh = _move(run, actor, f, entity, record, action["move"])
                    if fresh is not None:
                        record = fresh
                elif verb == "notify":
                    _notify(run, f, entity, record, links, index, action["notify"], notes)
            except AutomationError:
                raise
            except Exception as exc:  # every failure refuses the whole operation, named
                transient = _transient(exc)
                if transient is not None:
                    raise transient from exc
                cause = " ".join(str(exc).split()) or type(exc).__name__
                raise AutomationError(
                    f"automation '{auto.name}' on {f.entity} {f.record_id} ({f.event}): action {index + 1} ({verb}) "
                    f"failed: {cause}",
                    automation=auto.name,
                    action=index + 1,
                    chain=tuple(step[0] for step in chain),
                    entity=f.entity,
                    record_id=f.record_id,
                ) from exc
    if notes:  # what an action skipped, in the record's journal
        journal.write(
            run.conn,
            run.storage,
            [
                journal.entry(f.entity, f.record_id, "note", now_utc(), by, kind="automation", text=text)
                for text in notes
            ],
        )


def _targets(run: _Run, entity: Entity, record: Mapping, target: str | None, fields=()) -> list[dict]:
    """The record itself, or the records its link or inverse ``target`` reaches."""
    if target is None:
        return [{**record, "_entity": entity.name}]
    return linked(run.conn, run.storage, entity, [record["id"]], target, fields).get(record["id"], [])


def _values(run: _Run, f: Firing, target: Entity, entity: Entity, record, links, values: Mapping) -> dict:
    return {
        name: resolve(
            value,
            target=target,
            name=name,
            entity=entity,
            record=record,
            links=links,
            now=run.now,
            zone=run.model.timezone,
        )
        for name, value in (values or {}).items()
    }


def _create(run: _Run, actor, f: Firing, entity: Entity, record, links, action, origin, notes) -> None:
    target = run.model.entities[action["create"]]
    values = _values(run, f, target, entity, record, links, action.get("values"))
    if target.owner and "owner" not in values:
        values["owner"] = _assignee(run, f, record, action.get("assign"), origin, notes)
    actor.create(target.name, values)


def _assignee(run: _Run, f: Firing, record, assign, origin, notes) -> str | None:
    """Who owns a created record: ``role`` -> the first user with the role by login;
    ``owner`` -> the triggering record's owner; ``user`` -> that login; no ``assign`` -> the
    user who triggered the automation. Nobody fits: the record is created without an owner
    and a note says so."""
    if not assign:
        return origin
    if "role" in assign:
        users = run.with_role(assign["role"])
        if users:
            return users[0]
        notes.append(f"automation {f.automation.name}: no user has role '{assign['role']}'; created unassigned")
        return None
    if assign.get("owner"):
        return record.get("owner")
    login = assign.get("user")
    if login in run.users:
        return login
    notes.append(f"automation {f.automation.name}: no user '{login}'; created unassigned")
    return None


def _update(run: _Run, actor, f: Firing, entity: Entity, record, links, spec) -> dict | None:
    target_name = spec.get("target")
    fresh = None
    for item in _targets(run, entity, record, target_name):
        target = run.model.entities[item["_entity"]]
        values = _values(run, f, target, entity, record, links, spec.get("values"))
        after = actor.update(target.name, item["id"], values)
        if target_name is None:
            fresh = after
    return fresh


def _move(run: _Run, actor, f: Firing, entity: Entity, record, spec) -> dict | None:
    target_name = spec.get("target")
    stage = spec["stage"]
    fresh = None
    for item in _targets(run, entity, record, target_name, ("stage",)):
        if item.get("stage") == stage:  # already there: nothing to do
            continue
        after = actor.move(item["_entity"], item["id"], stage)
        if target_name is None:
            fresh = after
    return fresh


def _first_line(text: str, limit: int = 200) -> str:
    """The first non-blank line of a message, the subject of an e-mail whose automation gives
    none (cut at ``limit`` characters, with an ellipsis)."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _notify(run: _Run, f: Firing, entity: Entity, record, links, index, spec, notes) -> None:
    auto = f.automation
    parts = run.compiled.templates[(auto.name, index, "template")]
    subject_parts = run.compiled.templates.get((auto.name, index, "subject"))
    rendered: dict[frozenset, tuple[str, str]] = {}

    def texts(hidden: frozenset) -> tuple[str, str]:
        """Subject and body with the ``hidden`` linked records shown as hidden (once per set)."""
        if hidden not in rendered:
            body = render(run.model, entity, parts, record, links, hidden)
            subject = (
                render(run.model, entity, subject_parts, record, links, hidden)
                if subject_parts
                else (_first_line(body) or auto.label or auto.name)
            )
            rendered[hidden] = (subject, body)
        return rendered[hidden]

    rows: list[dict] = []
    seen: set[tuple[str, str]] = set()
    stamp = now_utc()  # the real time, also under a tick told another `now`

    def add(channel: str, recipient: str, login: str | None = None) -> None:
        """A message to a user (``login``) shows no title or field of a linked record the user
        may not read; one to an address the model names (or a webhook) is rendered in full."""
        if (channel, recipient) in seen:
            return
        seen.add((channel, recipient))
        subject, body = texts(run.hidden_for(login, links) if login is not None else frozenset())
        payload = None
        if channel == "webhook":
            payload = {
                "automation": auto.name,
                "entity": f.entity,
                "record_id": f.record_id,
                "event": f.event,
                "subject": subject,
                "text": body,
                "record": journal.safe(record),
            }
        rows.append(
            {
                "created_at": stamp,
                "automation": auto.name,
                "entity": f.entity,
                "record_id": f.record_id,
                "channel": channel,
                "recipient": recipient,
                "subject": subject,
                "body": body,
                "payload": payload,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": stamp,
            }
        )

    def skipped(to: str, why: str) -> None:
        notes.append(f"automation {auto.name}: notification to {to} not sent: {why}")

    for to in spec["to"]:
        kind, value = recipient_kind(str(to))
        if kind == "owner":
            owner = record.get("owner")
            if owner is None:
                skipped(to, f"{f.entity} {f.record_id} has no owner")
            elif not (run.users.get(owner) or {}).get("email"):
                skipped(to, f"user '{owner}' has no e-mail")
            else:
                add("email", run.users[owner]["email"], owner)
        elif kind == "role":
            logins = run.with_role(value)
            addresses = [run.users[u]["email"] for u in logins if run.users[u]["email"]]
            if not addresses:
                skipped(to, f"no user with role '{value}' has an e-mail")
            for login in logins:
                if run.users[login]["email"]:
                    add("email", run.users[login]["email"], login)
        elif kind == "user_link":  # the users a `to: user` link of the record names
            held = record.get(value)
            logins = [held] if isinstance(held, str) else list(held or ())
            if not logins:
                skipped(to, f"{f.entity} {f.record_id} has no {value}")
            for login in logins:
                if (run.users.get(login) or {}).get("email"):
                    add("email", run.users[login]["email"], login)
                else:
                    skipped(to, f"user '{login}' has no e-mail")
        elif kind == "user":
            if value not in run.users:
                skipped(to, f"no user '{value}'")
            elif not run.users[value]["email"]:
                skipped(to, f"user '{value}' has no e-mail")
            else:
                add("email", run.users[value]["email"], value)
        elif kind == "email_path":
            addresses = [str(a) for a in path_values(record, links, value)]
            if not addresses:
                skipped(to, f"{f.entity} {f.record_id} has no {value}")
            for address in addresses:
                add("email", address)
        elif kind == "email":
            add("email", value)
        else:
            add("webhook", value)
    if rows:
        run.conn.execute(insert(run.storage.outbox_table), rows)
