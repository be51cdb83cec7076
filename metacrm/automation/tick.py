"""Time-based triggers: what ``crm.tick(now)`` / ``metacrm tick`` fires.

- ``overdue: FIELD`` — the record's date or datetime is past (a date: the whole day has
  passed); once per record and value of the field, so a postponed and again missed due date
  fires again.
- ``sla: true`` — the record has stayed in a stage longer than the stage's ``sla``; once per
  record and stage entry (``stage_entered_at``).
- ``before: {field, by}`` — the date minus ``by`` has come and the date itself has not
  passed; once per record and value of the field. With ``at`` as well, the reminder waits for
  the first scheduled minute at or after that moment (one that falls after the date itself
  sends none).
- ``at: CRON`` — at each scheduled minute (5-field cron, in the model's ``timezone:``) the automation fires for every
  record of its entity that satisfies ``if:``. Minutes missed since the last firing are made
  up (at most the latest 100); the first run fires only the latest due minute.

Idempotency and concurrency: every firing inserts a row into ``metacrm_fired`` (automation,
entity, record, key, occurrence) under a unique constraint, in its own transaction together
with the actions. The candidates of an automation are found with one query that excludes the
fired ones (``NOT EXISTS``); before firing, the candidate is checked again inside the
transaction, and a unique violation means another tick fired it first: it is skipped. So a
second run fires nothing twice, and two ticks at once fire each event once. A failing
automation rolls back its own firing only (it is tried again on the next tick) and is
reported in the result with ``status: failed``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from sqlalchemy import Date, String, and_, exists, func, insert, literal, or_, select
from sqlalchemy.exc import IntegrityError

from ..dates import DateError, local_today, parse_datetime, read_datetime_text
from ..errors import MetaCRMError, ValidationError
from ..model.builder import parse_duration
from ..runtime.engine import writing
from ..storage.types import UTCDateTime, now_utc
from ..types import Fired
from .actions import Firing, fire
from .compiled import Compiled, Rule, compiled_for
from .cron import first_at_or_after, occurrences

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # an unused occurrence column
EPOCH_DATE = dt.date(1970, 1, 1)
MAX_CATCH_UP = 100  # scheduled minutes made up in one run at most
SCHEDULE = "at"  # the key of an `at` automation's own rows (record_id 0: the minutes it ran)


def _at(moment: dt.datetime):
    return literal(moment, UTCDateTime())


def _on(day: dt.date):
    return literal(day, Date())


class _Duplicate(Exception):
    """Another tick fired this event first."""


def _moment(now, zone: str | None = None) -> dt.datetime:
    """``now`` (None: the current moment) in UTC; text and naive values are local time of the
    model's zone (read by metacrm.dates, the one date parser)."""
    if now is None:
        return now_utc()
    if not isinstance(now, str | dt.date):
        raise ValidationError(f"tick: now must be a datetime, not {now!r}")
    try:
        return parse_datetime(now, zone)
    except DateError as exc:
        written = now if isinstance(now, dt.date) else _written(now)
        if isinstance(written, dt.datetime):  # a moment UTC cannot hold: the calendar's end
            raise _calendar_end(written) from None
        raise ValidationError(f"tick: now: {exc}") from None


def _written(text: str) -> dt.datetime | None:
    try:
        return read_datetime_text(text)
    except DateError:
        return None


def _calendar_end(now: dt.datetime) -> ValidationError:
    return ValidationError(
        f"tick: now {now.isoformat()} is too close to the end of the calendar (years 1 to 9999) "
        "for the delays of the model's automations; give a moment between them"
    )


def tick(crm, now=None) -> list[Fired]:
    """Fire what is due at ``now``; one dict per firing: automation, entity, record_id,
    event, occurrence, status (``fired`` or ``failed`` with ``error``)."""
    now = _moment(now, crm.model.timezone)
    compiled = compiled_for(crm.model)
    try:  # every delay added to or taken from now fits the calendar: checked before firing any
        for rule in compiled.timed:
            if rule.event != "at":
                _query(crm, compiled, rule, now)
    except OverflowError:
        raise _calendar_end(now) from None
    out: list[dict] = []
    try:
        for rule in compiled.timed:
            kind = rule.event
            if kind == "at":
                out += _schedule(crm, compiled, rule, now)
            else:
                out += [r for r in _candidates(crm, compiled, rule, now) if r is not None]
    except OverflowError:  # a schedule's next occurrence past the year 9999
        raise _calendar_end(now) from None
    return out


# -- the candidates of one automation -----------------------------------------------------------
def _not_fired(storage, auto_name: str, entity: str, id_col, key, at, on):
    fired = storage.fired_table
    return ~exists().where(
        fired.c.automation == auto_name,
        fired.c.entity == entity,
        fired.c.record_id == id_col,
        fired.c.key == key,
        fired.c.occurrence_at == at,
        fired.c.occurrence_on == on,
    )


def _query(crm, compiled: Compiled, rule: Rule, now: dt.datetime):
    """``(select of id, key, occurrence_at, occurrence_on; the field's type)`` for the records
    due now and not fired yet (one query per automation)."""
    auto = rule.automation
    storage = crm.storage
    entity = crm.model.entities[auto.entity]
    table = storage.table(entity.name)
    trigger = auto.trigger
    if rule.event == "sla":
        parts = [
            and_(
                table.c.pipeline == pipeline.name,
                table.c.stage == stage.name,
                table.c.stage_entered_at <= now - dt.timedelta(seconds=stage.sla_seconds),
            )
            for pipeline in entity.pipelines.values()
            for stage in pipeline.stages.values()
            if stage.sla_seconds
        ]
        if not parts:
            return None
        key, at, on = table.c.stage, table.c.stage_entered_at, _on(EPOCH_DATE)
        due = or_(*parts)
    else:
        name = trigger["overdue"] if rule.event == "overdue" else trigger["before"]["field"]
        column = table.c[name]
        is_date = entity.fields[name].type == "date"
        key = literal(f"{rule.event}:{name}", String())
        at, on = (_at(EPOCH), column) if is_date else (column, _on(EPOCH_DATE))
        zone = crm.model.timezone  # a date field's day is the model's local day
        if rule.event == "overdue":
            due = column < (local_today(zone, now) if is_date else now)
        else:
            ahead = now + dt.timedelta(seconds=parse_duration(trigger["before"]["by"]) or 0)
            due = (
                and_(column <= local_today(zone, ahead), column >= local_today(zone, now))
                if is_date
                else and_(column <= ahead, column > now)
            )
    query = select(table.c.id, key.label("occ_key"), at.label("occ_at"), on.label("occ_on")).where(
        due, _not_fired(storage, auto.name, entity.name, table.c.id, key, at, on)
    )
    if auto.condition:
        query = query.where(compiled.condition_sql(storage, auto))
    if entity.archive:  # an archived record is deleted: no time-based trigger fires for it
        query = query.where(table.c.archived_at.is_(None))
    return query.order_by(table.c.id)


def _candidates(crm, compiled: Compiled, rule: Rule, now: dt.datetime) -> Iterator[dict | None]:
    query = _query(crm, compiled, rule, now)
    if query is None:
        return
    with crm._reading() as conn:
        rows = conn.execute(query).all()
    auto = rule.automation
    cron = auto.trigger.get("at") if rule.event == "before" else None
    by = dt.timedelta(seconds=parse_duration(auto.trigger["before"]["by"]) or 0) if cron else None
    table = crm.storage.table(auto.entity)
    for record_id, key, at, on in rows:
        at = _aware(at)
        on = on if isinstance(on, dt.date) else dt.date.fromisoformat(str(on))
        if cron:  # the reminder waits for the schedule's first minute after its moment
            zone = crm.model.timezone
            moment = (at if at != EPOCH else parse_datetime(on, zone)) - by  # a date: its local midnight
            if first_at_or_after(cron, moment, zone=zone) > now:
                continue
        recheck = query.where(table.c.id == record_id)
        yield _fire_one(crm, compiled, rule, record_id, key, at, on, recheck, now)


def _aware(value) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _occurrence(rule: Rule, key: str, at: dt.datetime, on: dt.date) -> str:
    if rule.event == "sla":
        return f"{key} since {at.isoformat()}"
    return on.isoformat() if at == EPOCH else at.isoformat()


def _fire_one(crm, compiled, rule: Rule, record_id: int, key, at, on, recheck, now) -> dict | None:
    """One event in its own transaction (a savepoint inside crm.transaction()): checked
    again, recorded as fired, its actions run. None when it is no longer due or another
    tick fired it first."""
    from ..runtime.crm import _savepoint

    auto = rule.automation
    result = {
        "automation": auto.name,
        "entity": auto.entity,
        "record_id": record_id,
        "event": rule.event,
        "occurrence": _occurrence(rule, key, at, on),
    }
    outer = crm._tx
    try:
        with _savepoint(outer) if outer is not None else writing(crm.engine) as conn:
            if conn.execute(recheck).first() is None:
                return None  # changed meanwhile, or fired by another tick
            try:
                conn.execute(
                    insert(crm.storage.fired_table),
                    {
                        "automation": auto.name,
                        "entity": auto.entity,
                        "record_id": record_id,
                        "key": key,
                        "occurrence_at": at,
                        "occurrence_on": on,
                        "fired_at": now_utc(),
                    },
                )
            except IntegrityError:
                raise _Duplicate from None
            with crm._within(conn):  # what the actions write joins this event's transaction
                fire(crm, conn, compiled, [Firing(rule, auto.entity, record_id, rule.event)], checked=True, now=now)
    except _Duplicate:
        return None
    except MetaCRMError as exc:
        return {**result, "status": "failed", "error": str(exc)}
    return {**result, "status": "fired"}


# -- at: CRON ------------------------------------------------------------------------------------
def _schedule(crm, compiled: Compiled, rule: Rule, now: dt.datetime) -> list[dict]:
    auto = rule.automation
    storage = crm.storage
    fired = storage.fired_table
    table = storage.table(auto.entity)
    with crm._reading() as conn:
        last = conn.execute(
            select(func.max(fired.c.occurrence_at)).where(
                fired.c.automation == auto.name,
                fired.c.entity == auto.entity,
                fired.c.record_id == 0,
                fired.c.key == SCHEDULE,
            )
        ).scalar()
    due = occurrences(
        auto.trigger["at"],
        _aware(last) if last is not None else None,
        now,
        cap=MAX_CATCH_UP,
        zone=crm.model.timezone,
    )
    out: list[dict] = []
    for moment in due:
        query = select(table.c.id).where(
            _not_fired(
                storage, auto.name, auto.entity, table.c.id, literal(SCHEDULE, String()), _at(moment), _on(EPOCH_DATE)
            )
        )
        if auto.condition:
            query = query.where(compiled.condition_sql(storage, auto))
        if "archived_at" in table.c:  # an archived record is deleted: no schedule fires for it
            query = query.where(table.c.archived_at.is_(None))
        query = query.order_by(table.c.id)
        with crm._reading() as conn:
            ids = conn.execute(query).scalars().all()
        for record_id in ids:
            recheck = query.where(table.c.id == record_id)
            done = _fire_one(crm, compiled, rule, record_id, SCHEDULE, moment, EPOCH_DATE, recheck, now)
            if done is not None:
                out.append(done)
        _mark_minute(crm, auto, moment)
    return out


def _mark_minute(crm, auto, moment: dt.datetime) -> None:
    """Record that the scheduled minute ran (after its records, so a crash makes it up)."""
    from ..runtime.crm import _savepoint

    outer = crm._tx
    row = {
        "automation": auto.name,
        "entity": auto.entity,
        "record_id": 0,
        "key": SCHEDULE,
        "occurrence_at": moment,
        "occurrence_on": EPOCH_DATE,
        "fired_at": now_utc(),
    }
    try:
        with _savepoint(outer) if outer is not None else writing(crm.engine) as conn:
            conn.execute(insert(crm.storage.fired_table), row)
    except IntegrityError:
        pass  # another tick marked it


__all__ = ["tick"]
