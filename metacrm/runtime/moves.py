"""Stage moves: the edge must exist, ``requires`` must be filled, ``when`` must hold, the
user's role must be allowed; then one transaction does a compare-and-swap update of the
record (``WHERE stage = :from AND version = :v``; it also ORs the target stage's bit into the
record's ``reached`` mask, see metacrm.storage.tables) and writes the history row.

Guards read the record inside the move's transaction; ``when`` conditions are evaluated by
the database with the same compiled SQL as filters, so a guard and a filter never disagree.
The graph itself is the compiled adjacency map of the Pipeline: no per-record machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from sqlalchemy import BigInteger, Table, and_, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from ..errors import ConflictError, TransitionError
from ..model.metamodel import Entity, Pipeline, Transition
from ..model.suggest import did_you_mean, listing
from ..storage import naming
from ..storage.tables import Storage
from ..storage.types import now_utc
from ..types import AllowedMove


def missing_requires(
    conn: Connection, storage: Storage, entity: Entity, row: Mapping, stage_name: str, pipeline: Pipeline
) -> list[str]:
    """The fields and links ``stage`` requires that the record has not filled."""
    missing = []
    for name in pipeline.stages[stage_name].requires:
        if name in entity.fields:
            value = row[name]
            if value is None or value == "" or value == []:
                missing.append(name)
            continue
        link = entity.links[name]
        if link.many and _LINKS + name in row:  # read with the row (row_with_links)
            if not row[_LINKS + name]:
                missing.append(name)
        elif link.many:
            join = storage.join_table(entity.name, name)
            count = conn.execute(
                select(func.count()).select_from(join).where(join.c.source_id == row["id"])
            ).scalar_one()
            if not count:
                missing.append(name)
        elif row[naming.link_column(name)] is None:
            missing.append(name)
    return missing


_CONDITIONS: dict[tuple[str, str, str], object] = {}


def condition_holds(conn: Connection, storage: Storage, entity: Entity, record_id: int, when: str) -> bool:
    key = (storage.model.sha256, entity.name, when)
    query = _CONDITIONS.get(key)
    if query is None:  # compiled once per model version and condition
        from ..expr import compile_sql

        table = storage.table(entity.name)
        clause = compile_sql(storage, entity.name, when, what="when")
        query = select(table.c.id).where(and_(table.c.id == bindparam("_id"), clause))
        if len(_CONDITIONS) > 1024:
            _CONDITIONS.clear()
        _CONDITIONS[key] = query
    return conn.execute(query, {"_id": record_id}).first() is not None


def _holding(conn: Connection, storage: Storage, entity: Entity, ids: list[int], when: str) -> set[int]:
    """Which of ``ids`` satisfy the condition ``when`` now (one query per chunk of ids)."""
    from ..expr import compile_sql

    table = storage.table(entity.name)
    clause = compile_sql(storage, entity.name, when, what="when")
    found: set[int] = set()
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        found.update(conn.execute(select(table.c.id).where(table.c.id.in_(chunk), clause)).scalars())
    return found


def entry_guards(pipeline: Pipeline, stage: str) -> tuple[str, ...]:
    """The ``when`` conditions of the moves into ``stage``, when every such move has one (a
    record placed there must satisfy one of them); empty when some move in is unguarded."""
    whens = [adj[stage].when for adj in pipeline.adjacency.values() if stage in adj]
    if not whens or not all(whens):
        return ()
    return tuple(dict.fromkeys(w for w in whens if w))


def placement_problems(
    conn: Connection, storage: Storage, entity: Entity, rows: list[Mapping]
) -> list[tuple[int, str, str]]:
    """Why stored records cannot stand in the stage they were placed in (an import straight
    into a later stage): ``[(position in rows, field or 'stage', reason)]``, empty when they
    all can. The stage's ``requires`` must be filled, and when every move into the stage has a
    ``when``, one of those conditions must hold (read by the database, as for a move).
    Roles are not checked: an import needs the ``import`` permission instead. A record in its
    pipeline's initial stage is not checked here (its create checks the initial requires)."""
    out: list[tuple[int, str, str]] = []
    placed = [(n, row) for n, row in enumerate(rows) if row["stage"] != entity.pipelines[row["pipeline"]].initial]
    if not placed:
        return out
    many = {}
    names = {name for _, row in placed for name in entity.pipelines[row["pipeline"]].stages[row["stage"]].requires}
    for name in names:
        link = entity.links.get(name)
        if link is not None and link.many:
            join = storage.join_table(entity.name, name)
            ids = [row["id"] for _, row in placed]
            filled: set[int] = set()
            for start in range(0, len(ids), 1000):
                query = select(join.c.source_id).where(join.c.source_id.in_(ids[start : start + 1000])).distinct()
                filled.update(conn.execute(query).scalars())
            many[name] = filled
    guarded: dict[tuple[str, str], list[int]] = {}
    for n, row in placed:
        pipeline = entity.pipelines[row["pipeline"]]
        stage = row["stage"]
        for name in pipeline.stages[stage].requires:
            if name in many:
                empty = row["id"] not in many[name]
            elif name in entity.fields:
                empty = row[name] is None or row[name] == "" or row[name] == []
            else:
                empty = row[naming.link_column(name)] is None
            if empty:
                out.append((n, name, f"is required to be in stage '{stage}'"))
        if entry_guards(pipeline, stage):
            guarded.setdefault((pipeline.name, stage), []).append(n)
    for (pipeline_name, stage), positions in guarded.items():
        whens = entry_guards(entity.pipelines[pipeline_name], stage)
        ids = [rows[n]["id"] for n in positions]
        holding: set[int] = set()
        for when in whens:
            holding |= _holding(conn, storage, entity, ids, when)
        for n in positions:
            if rows[n]["id"] not in holding:
                out.append(
                    (n, "stage", f"cannot be placed in stage '{stage}': condition not met: {' or '.join(whens)}")
                )
    return sorted(out)


def reasons(
    conn: Connection,
    storage: Storage,
    entity: Entity,
    row: Mapping,
    pipeline: Pipeline,
    transition: Transition,
    roles: frozenset[str] | None,
) -> list[str]:
    """Why the move along ``transition`` is not possible now (empty: it is)."""
    out = []
    if transition.roles and roles is not None and not roles & set(transition.roles):
        out.append(f"only for roles: {', '.join(transition.roles)}")
    for name in missing_requires(conn, storage, entity, row, transition.target, pipeline):
        out.append(f"{name} is required")
    if any(f.required_if for f in entity.fields.values()):
        from .rules import move_reasons

        out += move_reasons(storage, entity, row, transition.target)
    if transition.when and not condition_holds(conn, storage, entity, row["id"], transition.when):
        out.append(f"condition not met: {transition.when}")
    return out


def options(conn, storage, entity: Entity, row: Mapping, roles) -> list[AllowedMove]:
    """Every outgoing move from the record's stage, possible now or not, with reasons."""
    pipeline = entity.pipelines[row["pipeline"]]
    result = []
    for target, transition in pipeline.adjacency.get(row["stage"], {}).items():
        why = reasons(conn, storage, entity, row, pipeline, transition, roles)
        stage = pipeline.stages[target]
        result.append(
            {
                "stage": target,
                "label": stage.caption,
                "kind": stage.kind,
                "possible": not why,
                "reasons": why,
                **({"reopen": True} if transition.reopen else {}),
            }
        )
    return result


def _describe(moves: list[dict]) -> str:
    if not moves:
        return "none"
    parts = []
    for m in moves:
        parts.append(m["stage"] if m["possible"] else f"{m['stage']} ({'; '.join(m['reasons'])})")
    return ", ".join(parts)


def move(
    conn: Connection,
    storage: Storage,
    entity: Entity,
    row: Mapping,
    stage: str,
    *,
    by: str | None,
    roles: frozenset[str] | None,
    note: str | None = None,
    version: int | None = None,
    seen_stage: str | None = None,
) -> dict:
    """Check and apply one move inside the caller's write transaction; raises on refusal.
    Returns the row as it is after the move (the caller need not read it again).
    ``seen_stage``: the stage read just before the transaction waited for the write lock; a
    record that left it meanwhile was moved by a concurrent writer (ConflictError)."""
    what = f"{entity.name} {row['id']}"
    pipeline = entity.pipelines[row["pipeline"]]
    current = row["stage"]
    where = {"entity": entity.name, "record_id": row["id"]}
    if version is not None and row["version"] != version:
        raise ConflictError(
            f"{what} was changed by someone else (now version {row['version']}, you had {version}); read it again",
            **where,
            expected_version=version,
            actual_version=row["version"],
        )
    if seen_stage is not None and current != seen_stage:
        raise ConflictError(
            f"{what} was moved by someone else meanwhile (from '{seen_stage}' to '{current}'); read it again",
            **where,
            field="stage",
        )
    refused = {**where, "stage": stage, "current": current}
    if stage not in pipeline.stages:
        hint = did_you_mean(stage, pipeline.stages)
        raise TransitionError(
            f"{what}: unknown stage '{stage}'" + (f" ({hint})" if hint else "") + f"; stages of pipeline "
            f"'{pipeline.name}': {listing(pipeline.stages)}",
            **refused,
        )
    transition = pipeline.adjacency.get(current, {}).get(stage)
    if stage != current and transition is not None:  # the usual case: check only the move asked for
        if not reasons(conn, storage, entity, row, pipeline, transition, roles):
            return _apply(conn, storage, entity, row, pipeline, transition, by=by, note=note)
    moves = options(conn, storage, entity, row, roles)  # refused: say why, with every way out
    if stage == current:
        raise TransitionError(
            f"{what} is already in stage '{stage}'; allowed next: {_describe(moves)}", moves, **refused
        )
    if transition is None:
        closed = pipeline.stages[current]
        if closed.closed:
            raise TransitionError(
                f"{what} is {closed.kind} (stage '{current}'); it can leave only by a declared reopen "
                f"(reopen moves: {_describe(moves)})",
                moves,
                **refused,
            )
        raise TransitionError(
            f"{what}: no move from '{current}' to '{stage}'; allowed next: {_describe(moves)}", moves, **refused
        )
    chosen = next(m for m in moves if m["stage"] == stage)
    raise TransitionError(
        f"{what}: cannot move from '{current}' to '{stage}': {'; '.join(chosen['reasons'])}; "
        f"allowed next: {_describe(moves)}",
        moves,
        **refused,
        reasons=chosen["reasons"],
    )


def try_move(
    conn: Connection,
    storage: Storage,
    entity: Entity,
    row: Mapping,
    stage: str,
    *,
    by: str | None,
    roles: frozenset[str] | None,
    note: str | None = None,
) -> dict | None:
    """The move of a row read before the transaction (:func:`read_before`), when it is an
    allowed move whose guards hold on that row: applied with the compare-and-swap on the
    row's stage and version, so it is applied only to the row as read. Returns the row after
    the move, or None (nothing written) when the move is not allowed on that row, or the
    record changed since it was read: the caller then reads the row in the transaction and
    moves it as :func:`move` does, which says why a move is refused."""
    pipeline = entity.pipelines[row["pipeline"]]
    transition = pipeline.adjacency.get(row["stage"], {}).get(stage)
    if transition is None or stage == row["stage"] or stage not in pipeline.stages:
        return None
    if reasons(conn, storage, entity, row, pipeline, transition, roles):
        return None
    return _apply(conn, storage, entity, row, pipeline, transition, by=by, note=note, strict=False)


def moved_record(conn: Connection, storage: Storage, entity: Entity, row: Mapping) -> dict:
    """The public record of a row ``move`` returned, its many-links read with one prebuilt
    SELECT each (or taken from the row, when :func:`row_with_links` read them): what
    ``crm.move`` returns, without reading the row again (the compare-and-swap guarantees the
    row is the one read plus the move's own changes)."""
    from .records import many_links, row_to_record

    many = {}
    for link in many_links(entity):
        if _LINKS + link.name in row:
            many[link.name] = _read_links(row[_LINKS + link.name])
            continue
        query = _links_query(storage.join_table(entity.name, link.name))
        many[link.name] = list(conn.execute(query, {"_id": row["id"]}).scalars())
    return row_to_record(entity, row, many)


_LINKS = "__links_"  # the key of a many-link's ids in a row read by row_with_links


def row_with_links(storage: Storage, entity: Entity, dialect: str, reacting: bool):
    """The SELECT of a record's row by ``:_id`` for a move, with the ids of each many-link
    too, so that the record a move returns needs no other statement: on PostgreSQL as arrays
    (``coalesce((SELECT array_agg(target_id ORDER BY target_id) ...), '{}')``), on SQLite as
    ``group_concat`` text (see :func:`_read_links`). None (the plain read) when the entity has
    no many-link, or when reactors run after the move (they may change the links)."""
    from .records import many_links

    if reacting or not many_links(entity) or dialect not in ("postgresql", "sqlite"):
        return None
    if any(link.polymorphic for link in many_links(entity)):  # items are {"entity", "id"}
        return None
    links = tuple((link.name, storage.join_table(entity.name, link.name)) for link in many_links(entity))
    return _row_with_links(storage.table(entity.name), links, dialect)


def _read_links(value) -> list[int]:
    """A many-link's ids as :func:`row_with_links` read them: a list (PostgreSQL) or
    comma-separated text, NULL when there is none (SQLite); sorted."""
    if isinstance(value, str):
        return sorted(int(part) for part in value.split(","))
    return sorted(value or ())


@lru_cache(maxsize=64)
def _row_with_links(table: Table, links: tuple, dialect: str):
    from sqlalchemy import ARRAY, literal
    from sqlalchemy.dialects.postgresql import aggregate_order_by

    arrays = []
    for name, join in links:
        if dialect == "sqlite":
            ids = select(func.group_concat(join.c.target_id)).where(join.c.source_id == table.c.id)
            arrays.append(ids.scalar_subquery().label(_LINKS + name))
            continue
        ids = select(func.array_agg(aggregate_order_by(join.c.target_id, join.c.target_id)))
        ids = ids.where(join.c.source_id == table.c.id).scalar_subquery()
        empty = literal([], ARRAY(BigInteger()))
        arrays.append(func.coalesce(ids, empty).label(_LINKS + name))
    return select(table, *arrays).where(table.c.id == bindparam("_id"))


def read_before(crm, entity: Entity, record_id, query, conn=None) -> dict | None:
    """The record's row as committed now, read outside the move's write transaction (None
    when there is no such record: the move itself says NotFound), with the columns
    ``query`` (:func:`row_with_links` or the plain read by ``:_id``) selects, converted as
    SQLAlchemy converts them. One SELECT straight on the DBAPI connection, in autocommit: no
    SQLAlchemy transaction around it, so the hot path of a move pays one indexed read.

    The move checks its guards on this row and applies itself with a compare-and-swap on the
    row's stage and version (see :func:`try_move`), so the row is not read again inside the
    transaction. ``conn``: the SQLAlchemy connection the move's transaction will use, not yet
    begun (PostgreSQL: the read goes first on the same connection, no second checkout and
    ping); without it a pooled connection is taken (SQLite: before the move queues for the
    write lock, so a move that waited for another one sees that it was moved meanwhile)."""
    from .records import as_id

    record_id = as_id(entity, record_id)
    postgres = crm.engine.dialect.name == "postgresql"
    raw = conn.connection.dbapi_connection if conn is not None else crm.engine.raw_connection()
    dbapi = raw if conn is not None else (raw.driver_connection if postgres else raw)
    try:
        if postgres and conn is None:  # a raw checkout fires no engine_connect: the tenant's path set here
            from .tenants import apply_path, tenant_of

            apply_path(raw._connection_record, tenant_of(crm.engine))
        if postgres:
            dbapi.autocommit = True  # one round trip (not BEGIN, SELECT and the pool's ROLLBACK)
        sql, params = _driver_select(crm.engine.dialect, query, record_id)
        cursor = dbapi.cursor()
        try:
            cursor.execute(sql, params)
            found = cursor.fetchone()
            reader = _READERS.get((crm.engine.dialect, query))
            if reader is None:  # the driver's description (a column object each) read once per query
                reader = _row_reader(crm.engine.dialect, query, tuple(d[1] for d in cursor.description))
        finally:
            cursor.close()
            if postgres:
                try:
                    dbapi.autocommit = False
                except Exception:  # never on in autocommit: a fresh connection instead
                    (conn.invalidate() if conn is not None else raw.invalidate())
                    raise
    finally:
        if conn is None:
            raw.close()  # back to the pool, which ends the read's transaction (rollback on return)
    if found is None:
        return None
    keys, processors = reader
    return {
        key: value if process is None or value is None else process(value)
        for key, process, value in zip(keys, processors, found, strict=True)
    }


def _driver_select(dialect, query, record_id: int) -> tuple[str, tuple | dict]:
    """The SQL text of a SELECT by ``:_id`` as the driver takes it, and its parameters (each
    bound as SQLAlchemy would: positional on SQLite, by name on PostgreSQL)."""
    from .bulk import _driver_form

    compiled, names, convert = _driver_form(dialect, query)
    values = compiled.construct_params({"_id": record_id}, _check=False)
    if compiled.positional:
        return compiled.string, tuple(convert[n](values[n]) if n in convert else values[n] for n in names)
    return compiled.string, {n: convert[n](v) if n in convert else v for n, v in values.items()}


_READERS: dict[tuple, tuple] = {}


def _row_reader(dialect, query, type_codes: tuple) -> tuple[tuple[str, ...], tuple]:
    """The keys of the selected columns and each one's result processor (as SQLAlchemy
    would apply it to a row; the driver's type codes pick the conversion, as in SQLAlchemy),
    kept per (dialect, query): a query's columns and their types do not change."""
    columns = list(query.selected_columns)
    keys = tuple(column.key for column in columns)
    processors = tuple(
        column.type._cached_result_processor(dialect, code) for column, code in zip(columns, type_codes, strict=True)
    )
    if len(_READERS) > 256:
        _READERS.clear()
    _READERS[(dialect, query)] = (keys, processors)
    return keys, processors


@lru_cache(maxsize=256)
def _links_query(join: Table):
    return select(join.c.target_id).where(join.c.source_id == bindparam("_id")).order_by(join.c.target_id)


@lru_cache(maxsize=64)
def _statements(table: Table, history: Table) -> tuple:
    """The compare-and-swap UPDATE and the history INSERT of a table, built once (bound
    parameters: nothing per move but the values)."""
    cas = (
        update(table)
        .where(table.c.id == bindparam("_id"), table.c.stage == bindparam("_from"), table.c.version == bindparam("_v"))
        .values(
            stage=bindparam("_to"),
            version=table.c.version + 1,
            updated_at=bindparam("_now"),
            updated_by=bindparam("_by"),
            stage_entered_at=bindparam("_now"),
            closed_at=bindparam("_closed"),
            reached=table.c.reached.op("|")(bindparam("_bit", type_=BigInteger())),
        )
    )
    return cas, insert(history)


@lru_cache(maxsize=64)
def _combined(table: Table, history: Table):
    """PostgreSQL: the compare-and-swap UPDATE and the history INSERT as one statement (one
    round trip): ``WITH moved AS (UPDATE ... RETURNING id) INSERT INTO history SELECT ...
    FROM moved``. The INSERT's row count says whether the compare-and-swap matched."""
    cas, _ = _statements(table, history)
    moved = cas.returning(table.c.id).cte("moved")
    names = [column.name for column in history.c if not column.primary_key]
    values = [
        moved.c.id if name == "record_id" else bindparam(f"h_{name}", type_=history.c[name].type) for name in names
    ]
    add = insert(history).from_select(names, select(*values).select_from(moved))
    return add.execution_options(preserve_rowcount=True)  # an INSERT's count is kept only when asked


def _apply(
    conn: Connection,
    storage: Storage,
    entity: Entity,
    row: Mapping,
    pipeline: Pipeline,
    transition: Transition,
    *,
    by: str | None,
    note: str | None,
    strict: bool = True,
) -> dict | None:
    """The move itself: compare-and-swap (the target's bit ORed into ``reached``), history row;
    returns the row after the move. When the compare-and-swap matches no row (the record
    changed meanwhile): ConflictError, or with ``strict=False`` None, nothing written."""
    now = now_utc()
    stage = transition.target
    table, history = storage.table(entity.name), storage.history_table
    bit = storage.reached_bits[(entity.name, pipeline.name)][stage]
    closed = now if pipeline.stages[stage].closed else None
    cas_values = {
        "_id": row["id"],
        "_from": row["stage"],
        "_v": row["version"],
        "_to": stage,
        "_now": now,
        "_closed": closed,
        "_bit": bit,
        "_by": by,
    }
    entered = row["stage_entered_at"]
    history_values = {
        "entity": entity.name,
        "record_id": row["id"],
        "pipeline": pipeline.name,
        "from_stage": row["stage"],
        "to_stage": stage,
        "at": now,
        "by": by,
        "note": note,
        "seconds_in_stage": max(0, int((now - entered).total_seconds())) if entered else None,
        "source": "reopen" if transition.reopen else "move",
    }
    from .bulk import execute_prepared

    if conn.dialect.name == "postgresql":
        both = {f"h_{name}": value for name, value in history_values.items() if name != "record_id"}
        cursor = execute_prepared(conn, _combined(table, history), {**cas_values, **both})
        matched = cursor.rowcount
        cursor.close()
    else:
        cas, add = _statements(table, history)
        cursor = execute_prepared(conn, cas, cas_values)
        matched = cursor.rowcount
        cursor.close()
        if matched == 1:
            execute_prepared(conn, add, history_values).close()
    if matched != 1 and not strict:
        return None
    if matched != 1:
        raise ConflictError(
            f"{entity.name} {row['id']} was moved or changed by someone else meanwhile; read it again",
            entity=entity.name,
            record_id=row["id"],
            expected_version=row["version"],
        )
    return {
        **row,
        "stage": stage,
        "version": row["version"] + 1,
        "updated_at": now,
        "updated_by": by,
        "stage_entered_at": now,
        "closed_at": closed,
        "reached": row["reached"] | bit,
    }
