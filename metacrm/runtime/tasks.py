"""Tasks: the records of entities declaring ``task:`` (see docs/model.md), across the model.

``crm.tasks(...)`` lists open tasks, ordered by deadline, each with its subject's title and
whether it is overdue or blocked: one query per task entity for the tasks, one for their
open blockers, and one per subject entity for the titles (``crm.titles``). Row-level access
applies: a user sees the tasks the ``read`` scope lets them read.

Two rules hold on every write (create, update, link, import, merge), checked in the write's
transaction by :func:`task_reactor`, so a refused write leaves nothing behind:

- a task cannot be closed (``done`` set, or ``status`` moved to a ``closed`` value) while a
  task it is ``blocked_by`` is open;
- ``blocked_by`` never forms a cycle (a task waiting, directly or not, for itself).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from sqlalchemy import and_, false, or_, select, true

from ..dates import DateError, local_today, parse_datetime
from ..errors import FieldIssue, ValidationError
from ..model.metamodel import Entity, Model, TaskSpec
from ..model.suggest import did_you_mean, listing
from ..storage.types import now_utc
from ..types import Task
from .protocol import Host

_FAR = dt.datetime.max.replace(tzinfo=dt.UTC)


def task_entities(model: Model) -> list[Entity]:
    return [e for e in model.entities.values() if e.task is not None]


def open_clause(table, spec: TaskSpec):
    """SQL: the task is open (not done / its status not closed; an empty value is open; an
    archived task is deleted, not open)."""
    clause = true()
    if spec.done:
        column = table.c[spec.done]
        clause = or_(column.is_(None), column == false())
    elif spec.status:
        column = table.c[spec.status]
        clause = or_(column.is_(None), column.notin_(list(spec.closed)))
    if "archived_at" in table.c:
        clause = and_(clause, table.c.archived_at.is_(None))
    return clause


def is_closed(spec: TaskSpec, record: Mapping) -> bool:
    if spec.done:
        return record.get(spec.done) is True
    if spec.status:
        return record.get(spec.status) in spec.closed
    return False


def _as_datetime(value) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)


def _overdue(due, now: dt.datetime, zone: str | None = None) -> bool:
    if due is None:
        return False
    if isinstance(due, dt.datetime):
        return _as_datetime(due) < now
    return due < local_today(zone, now)  # a date: overdue from the next day (the model's zone)


class TasksMixin(Host):
    """``crm.tasks()``: open tasks across the model's task lists."""

    def task_entities(self) -> list[str]:
        """The entities declaring ``task:``."""
        return [e.name for e in task_entities(self.model)]

    def tasks(
        self,
        *,
        overdue: bool = False,
        for_user: str | None = None,
        entity: str | None = None,
        now: dt.datetime | str | None = None,
        include_done: bool = False,
        limit: int | None = None,
    ) -> list[Task]:
        """Open tasks (with ``include_done`` closed ones too), earliest deadline first (those
        without one last): ``overdue`` only those past their deadline, ``for_user`` only
        those whose owner (the responsible user) is that login, ``entity`` only that task
        list. Each: ``{"entity", "id", "title", "due", "priority", "owner", "done",
        "overdue", "blocked", "blocked_by" (the open blockers' ids), "subject" ({"entity",
        "id"} or None), "subject_title", "subject_hidden" (the subject is a record the acting user
        may not read: no title), "record"}``."""
        self._ready()
        lists = task_entities(self.model)
        if entity is not None:
            ent = self._entity(entity)
            if ent.task is None:
                names = [e.name for e in lists]
                hint = did_you_mean(entity, names)
                raise ValidationError(
                    f"{ent.name} is not a task list (it declares no 'task:'); task lists: {listing(names)}"
                    + (f" ({hint})" if hint else "")
                )
            lists = [ent]
        if for_user is not None:
            self.user_info(for_user)  # NotFound names the unknown login
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValidationError(f"limit must be a whole number >= 0, not {limit!r}")
        try:  # text as every date option reads it (metacrm.dates): no zone means the model's
            now = now_utc() if now is None else parse_datetime(now, self.model.timezone)
        except DateError as exc:
            raise ValidationError(f"now: {exc}") from None
        out: list[Task] = []
        for ent in lists:
            out.extend(self._task_rows(ent, now, overdue=overdue, for_user=for_user, include_done=include_done))
        out.sort(key=lambda t: (_as_datetime(t["due"]) or _FAR, t["entity"], t["id"]))
        if limit is not None:
            out = out[:limit]
        self._subject_titles(out)
        return out

    def _task_rows(
        self, ent: Entity, now: dt.datetime, *, overdue: bool, for_user: str | None, include_done: bool
    ) -> list[Task]:
        from . import records as rec

        spec = ent.task
        table = self.storage.table(ent.name)
        query = self._select(ent, None, None)
        if not include_done:
            query = query.where(open_clause(table, spec))
        if for_user is not None:
            query = query.where(table.c.owner == for_user)
        if overdue:
            due = table.c[spec.due]
            cutoff = now if ent.fields[spec.due].type == "datetime" else local_today(self.model.timezone, now)
            query = query.where(due.is_not(None), due < cutoff)
        query = query.order_by(table.c[spec.due].is_(None), table.c[spec.due], table.c.id)
        with self._reading() as conn:
            rows = conn.execute(query).mappings().all()
            records = rec.rows_to_records(conn, self.storage, ent, rows)
            blockers = self._open_blockers(conn, ent, [r["id"] for r in records]) if spec.blocked_by else {}
        out = []
        for record in records:
            subject = record.get(spec.subject) if spec.subject else None
            if subject is not None and not isinstance(subject, Mapping):
                subject = {"entity": ent.links[spec.subject].target, "id": subject}
            waiting = blockers.get(record["id"], [])
            closed = is_closed(spec, record)
            out.append(
                {
                    "entity": ent.name,
                    "id": record["id"],
                    "title": record.get(ent.title) if ent.title else None,
                    "due": record.get(spec.due),
                    "priority": record.get(spec.priority) if spec.priority else None,
                    "owner": record.get("owner"),
                    "done": closed,
                    "overdue": not closed and _overdue(record.get(spec.due), now, self.model.timezone),
                    "blocked": bool(waiting),
                    "blocked_by": waiting,
                    "subject": subject,
                    "subject_title": None,
                    "subject_hidden": False,
                    "record": record,
                }
            )
        return out

    def _open_blockers(self, conn, ent: Entity, ids: Sequence[int]) -> dict[int, list[int]]:
        """task id -> ids of the open tasks it is blocked by (one query per chunk of ids)."""
        from .records import BATCH

        if not ids:
            return {}
        join = self.storage.join_table(ent.name, ent.task.blocked_by)
        table = self.storage.table(ent.name)
        found: dict[int, list[int]] = {}
        ids = sorted(ids)
        for start in range(0, len(ids), BATCH):
            query = (
                select(join.c.source_id, join.c.target_id)
                .join(table, table.c.id == join.c.target_id)
                .where(join.c.source_id.in_(ids[start : start + BATCH]), open_clause(table, ent.task))
                .order_by(join.c.source_id, join.c.target_id)
            )
            for source, target in conn.execute(query):
                found.setdefault(source, []).append(target)
        return found

    def _subject_titles(self, tasks: list[Task]) -> None:
        """Each task's ``subject_title`` and ``subject_hidden`` (a subject the acting user may not
        read shows no title: metacrm.runtime.titles); one query per subject entity."""
        from .titles import read_titles

        by_entity: dict[str, set[int]] = {}
        for task in tasks:
            if task["subject"] is not None:
                by_entity.setdefault(task["subject"]["entity"], set()).add(task["subject"]["id"])
        with self._reading() as conn:
            titles = {name: read_titles(conn, self.storage, self.actor, name, ids) for name, ids in by_entity.items()}
        for task in tasks:
            if task["subject"] is not None:
                task["subject_title"] = titles[task["subject"]["entity"]].get(task["subject"]["id"])
                task["subject_hidden"] = task["subject_title"] is None


# -- the rules on writes ---------------------------------------------------------------------------
def task_reactor(model: Model):
    """The reactor enforcing the task rules (None when the model has no task lists with
    blockers)."""
    specs = {e.name: e for e in task_entities(model) if e.task.blocked_by}
    if not specs:
        return None

    def react(crm, conn, entries: Sequence[Mapping]) -> None:
        closing: dict[str, list[tuple[int, str]]] = {}
        linking: dict[str, dict[int, list[int]]] = {}
        for e in entries:
            ent = specs.get(e["entity"])
            if ent is None or e["action"] in ("delete", "purge", "archive"):
                continue
            changes, spec = e.get("changes") or {}, ent.task
            member = spec.done or spec.status
            if member in changes:
                old, new = changes[member]
                if is_closed(spec, {member: new}) and not is_closed(spec, {member: old}):
                    closing.setdefault(ent.name, []).append((e["record_id"], member))
            if spec.blocked_by in changes:
                old, new = changes[spec.blocked_by]
                added = sorted(_ids(new) - _ids(old))
                if added:
                    linking.setdefault(ent.name, {})[e["record_id"]] = added
        for name, targets in linking.items():
            _refuse_cycles(crm, conn, specs[name], targets)
        for name, closed in closing.items():
            _refuse_blocked(crm, conn, specs[name], closed)

    return react


def _ids(value) -> set[int]:
    """The ids in a journaled many-link value (a list; a single id where one was removed)."""
    if isinstance(value, list | tuple | set):
        return {v for v in value if isinstance(v, int)}
    return {value} if isinstance(value, int) else set()


def _refuse_blocked(crm, conn, ent: Entity, closed: list[tuple[int, str]]) -> None:
    spec = ent.task
    join = crm.storage.join_table(ent.name, spec.blocked_by)
    table = crm.storage.table(ent.name)
    ids = [i for i, _ in closed]
    rows = conn.execute(
        select(join.c.source_id, join.c.target_id)
        .join(table, table.c.id == join.c.target_id)
        .where(join.c.source_id.in_(ids), open_clause(table, spec))
        .order_by(join.c.source_id, join.c.target_id)
    ).all()
    if not rows:
        return
    from .titles import HIDDEN, read_titles

    # a blocker the acting user may not read is named by its id alone, never by its title
    names = read_titles(conn, crm.storage, crm.actor, ent.name, [t for _, t in rows]) if ent.title else {}
    member = dict(closed)
    waiting: dict[int, list[str]] = {}
    for source, target in rows:
        name = names.get(target) if ent.title else None
        shown = f" «{name}»" if name is not None else f" {HIDDEN}" if ent.title else ""
        waiting.setdefault(source, []).append(f"{target}{shown}")
    first = next(iter(waiting))
    issues = [
        FieldIssue(
            ent.name,
            member[source],
            f"cannot close {ent.name} {source} while it is blocked by open {ent.name} {', '.join(blockers)}",
        )
        for source, blockers in waiting.items()
    ]
    raise ValidationError(
        f"{ent.name} {first}: cannot set {member[first]}: blocked by open {ent.name} {', '.join(waiting[first])}"
        f" ({spec.blocked_by}); close {'it' if len(waiting[first]) == 1 else 'them'} first",
        issues,
    )


def _refuse_cycles(crm, conn, ent: Entity, added: dict[int, list[int]]) -> None:
    """Refuse when a task now waits, directly or through others, for itself: one recursive
    query walks the ``blocked_by`` graph from every task that got new blockers."""
    name = ent.task.blocked_by
    for source, targets in added.items():
        if source in targets:
            raise ValidationError(
                f"{ent.name} {source}: {name} cannot name the task itself",
                [FieldIssue(ent.name, name, "names the task itself", source)],
            )
    join = crm.storage.join_table(ent.name, name)
    seed = select(join.c.source_id.label("origin"), join.c.target_id.label("id")).where(
        join.c.source_id.in_(sorted(added))
    )
    reach = seed.cte("reach", recursive=True)
    reach = reach.union(select(reach.c.origin, join.c.target_id).join(reach, join.c.source_id == reach.c.id))
    looped = conn.execute(
        select(reach.c.origin).where(reach.c.id == reach.c.origin).order_by(reach.c.origin).limit(1)
    ).scalar()
    if looped is not None:
        targets = added[looped]
        listed = ", ".join(map(str, targets))
        raise ValidationError(
            f"{ent.name} {looped}: {name} {listed} would make a cycle ({listed} already "
            f"wait{'s' if len(targets) == 1 else ''}, directly or not, for {ent.name} {looped})",
            [FieldIssue(ent.name, name, "would make a cycle", targets)],
        )


__all__ = ["TasksMixin", "is_closed", "open_clause", "task_entities", "task_reactor"]
