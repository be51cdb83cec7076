"""Stages and activity on a record: ``move``, ``allowed_moves``, ``history``, ``tick``,
``note`` and ``timeline``; a mixin of the CRM facade (metacrm.runtime.crm). The move itself
(guards, compare-and-swap, history row) is metacrm.runtime.moves."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.sql import ColumnElement

from ..errors import FieldIssue, MetaCRMError, PermissionDenied, ValidationError
from ..model.metamodel import Entity
from ..model.suggest import did_you_mean, listing
from ..storage.types import now_utc
from ..types import AllowedMove, Fired, HistoryEntry, JournalEntry, Record, TimelineEntry
from . import journal
from .access import check_row, require, row_clause
from .protocol import Host
from .records import as_id as _as_id
from .records import non_negative as _non_negative


class StagesMixin(Host):
    # -- stages -------------------------------------------------------------------------------
    def move(
        self, entity: str, record_id: int, stage: str, *, note: str | None = None, version: int | None = None
    ) -> Record:
        """Move a record to a stage through an allowed transition (TransitionError says why
        not, and lists the allowed moves). With ``version``, refuse (ConflictError) when the
        record changed since that version was read; without it, when another writer moved the
        record while this move waited for the write lock (two moves from the same stage: one
        wins, the other gets ConflictError, never TransitionError)."""
        from .moves import move, moved_record, read_before, row_with_links, try_move
        from .records import row_by_id

        self._ready()
        ent = self._staged(entity)
        require(self.model, self.actor, ent.name, "move")  # before the note is checked
        _storable(ent, note, "note")
        # the many-links come with the row (one statement less), unless a reactor may
        # change them after the move (they are read afterwards then)
        dialect = self.engine.dialect.name
        query = row_with_links(self.storage, ent, dialect, bool(self._reactors))
        query = row_by_id(self.storage.table(ent.name)) if query is None else query
        # Outside crm.transaction(), the row is read before the transaction: on SQLite before
        # waiting for the write lock, on PostgreSQL first thing on the transaction's connection.
        read: list = []
        first = None
        if self._tx is None:
            if dialect == "postgresql":
                first = lambda conn: read.append(read_before(self, ent, record_id, query, conn))  # noqa: E731
            else:
                read.append(read_before(self, ent, record_id, query))
        with self._writing(first) as conn:
            before = read[0] if read else None
            fresh = None
            if before is not None and (version is None or before["version"] == version) and self._may_move(conn, ent, before):
                # the usual case: the move applied to the row as read (compare-and-swap on its
                # stage and version), no read inside the transaction
                row = before
                fresh = try_move(conn, self.storage, ent, row, stage, by=self.user, roles=self._roles, note=note)
            if fresh is None:  # refused, or the record changed since: read it and move it here
                row = self._get_row(conn, ent, record_id, "move", query)
                fresh = move(
                    conn,
                    self.storage,
                    ent,
                    row,
                    stage,
                    by=self.user,
                    roles=self._roles,
                    note=note,
                    version=version,
                    seen_stage=before["stage"] if before is not None and version is None else None,
                )
            changes = {"stage": [row["stage"], fresh["stage"]]}
            at = fresh["stage_entered_at"]  # the history row's time: the timeline shows the move once
            self._log(conn, [journal.entry(ent.name, row["id"], "move", at, self.user, changes, text=note)])
            self._check_rules(conn, ent, [row["id"]])
            out = moved_record(conn, self.storage, ent, fresh)
            self._derived_values(conn, ent, [out])
            return out

    def _may_move(self, conn, ent: Entity, row) -> bool:
        """Whether the acting user may move the record of ``row`` (read before the
        transaction) and it is not archived; when not, the move reads it again and says why."""
        if ent.archive and row["archived_at"] is not None:
            return False
        if self.user is None:
            return True
        try:
            check_row(conn, self.storage, ent, self.actor, "move", row)
        except MetaCRMError:
            return False
        return True

    def tick(self, now: dt.datetime | None = None) -> list[Fired]:
        """Fire the time-based automations (overdue, sla, at, before) that are due at ``now``
        (default: the current time), each once however often this runs; returns what fired.
        See :mod:`metacrm.automation.tick`."""
        from ..automation.tick import tick

        self._ready()
        return tick(self, now)

    def allowed_moves(self, entity: str, record_id: int) -> list[AllowedMove]:
        """Every outgoing move of the record's stage: ``{"stage", "label", "kind", "possible",
        "reasons"}``, in declaration order."""
        self._ready()
        ent = self._staged(entity)
        with self._reading() as conn:
            return self._moves_of(conn, ent, self._get_row(conn, ent, record_id))

    def _moves_of(self, conn, ent: Entity, row) -> list[AllowedMove]:
        """``allowed_moves`` of a row already read (and readable)."""
        from .moves import options

        moves = options(conn, self.storage, ent, row, self._roles)
        if self.user is not None:
            try:  # a user who may read the record but not move it: no move is possible
                check_row(conn, self.storage, ent, self.actor, "move", row)
            except PermissionDenied as exc:
                for move in moves:
                    move["possible"], move["reasons"] = False, [str(exc), *move["reasons"]]
        return moves

    def history(self, entity: str, record_id: int) -> list[HistoryEntry]:
        """The record's stage moves, oldest first."""
        self._ready()
        ent = self._entity(entity)
        table = self.storage.history_table
        with self._reading() as conn:
            self._get_row(conn, ent, record_id)
            rows = conn.execute(
                select(table)
                .where(table.c.entity == ent.name, table.c.record_id == _as_id(ent, record_id))
                .order_by(table.c.at, table.c.id)
            ).mappings()
            return [{k: v for k, v in r.items() if k not in ("id", "entity")} for r in rows]

    def note(self, entity: str, record_id: int, text: str, *, kind: str = "note") -> JournalEntry:
        """Add an activity (a note, call, email or meeting) to a record's journal; reading the
        record is permission enough. Returns the journal entry."""
        self._ready()
        ent = self._entity(entity)
        if kind not in journal.KINDS:
            hint = did_you_mean(str(kind), journal.KINDS)
            raise ValidationError(
                f"unknown activity kind {kind!r}"
                + (f" ({hint})" if hint else "")
                + f"; kinds: {listing(journal.KINDS)}"
            )
        text = "" if text is None else str(text).strip()
        if not text:
            raise ValidationError(f"{ent.name}: a {kind} needs a text")
        _storable(ent, text, kind)
        with self._writing() as conn:
            row = self._get_row(conn, ent, record_id, "read")
            added = journal.entry(ent.name, row["id"], "note", now_utc(), self.user, kind=kind, text=text)
            self._log(conn, [added])
        return added

    def timeline(self, entity: str, record_id: int, *, limit: int = 100) -> list[TimelineEntry]:
        """What happened to a record, newest first: its journal (changes, moves, links,
        activities), stage history the journal does not hold, and the journal of the records
        linked to it (a deal's tasks; ``entity``, ``record_id`` and ``via`` say which).
        Each entry: at, entity, record_id, action, by, changes ({name: [old, new]}), kind,
        text, via, source. Linked records the acting user may not read stay hidden."""
        self._ready()
        ent = self._entity(entity)
        limit = _non_negative(limit, "limit")
        with self._reading() as conn:
            row = self._get_row(conn, ent, record_id)
            return self._timeline_of(conn, ent, row["id"], limit)

    def _timeline_of(self, conn, ent: Entity, rid: int, limit: int) -> list[TimelineEntry]:
        """``timeline`` of a record already read (and readable)."""

        def allowed(source: str) -> ColumnElement[bool] | None:
            return row_clause(self.storage, self.model.entities[source], self.actor, archived="include")

        return journal.timeline(conn, self.storage, ent, rid, limit=_non_negative(limit, "limit"), allowed=allowed)

    def _staged(self, entity: str) -> Entity:
        ent = self._entity(entity)
        if not ent.has_stages:
            raise ValidationError(f"{ent.name} has no stages")
        return ent


def _storable(ent: Entity, text: object, what: str) -> None:
    """Refuse text no database stores alike (NUL, lone surrogates), naming what it is."""
    from ..validation.values import unstorable_text

    bad = unstorable_text(text)
    if bad is not None:
        raise ValidationError(f"{ent.name}: {what}: {bad}", [FieldIssue(ent.name, what, bad)])
