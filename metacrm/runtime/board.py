"""The kanban board of a pipeline (``crm.board``, ``metacrm board``).

A column per stage, in the funnel's graph order (open stages along the forward moves, then won,
then lost): ``{"stage", "label", "kind", "probability", "count", "amount", "more", "records"}``.
``count`` and ``amount`` (the sum of the pipeline's money field, Decimal; ``None`` without one)
cover every record in the stage; ``records`` holds the first ``limit_per_stage`` of them
(``None``: all), each ``{"id", "title", "amount", "since", "owner"}`` (``owner`` where the entity
has owners; ``since`` is when the record entered the stage), and ``more`` says how many are not
shown. Records are ordered by ``order_by`` (a field or system column, ``-`` for descending),
by default the amount descending (records without one last), else the newest in the stage first;
ties by id. ``where`` filters the records (the expression language, as ``crm.find``).

Two statements whatever the number of stages: one GROUP BY for the counts and sums (the
covering (stage, amount) index), and one for the records: a UNION ALL of one ``ORDER BY ...
LIMIT n`` per stage, so each stage reads its first records from the index instead of the
database sorting the whole table. Without ``where`` both statements are built once per model
version, pipeline, order and limit, and reused.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, literal, select, union_all
from sqlalchemy.engine import Connection

from ..model.metamodel import Entity
from ..storage.tables import Storage
from ..types import Board
from .reports import BadReportOption, Money, _bad, amount_columns, choose_pipeline, graph_order, probability, summed

ORDER_COLUMNS = ("id", "created_at", "updated_at", "stage_entered_at")
ORDERABLE = (
    "string",
    "email",
    "phone",
    "url",
    "choice",
    "integer",
    "duration",
    "money",
    "currency",
    "decimal",
    "percent",
    "date",
    "datetime",
)


def _order(entity: Entity, table, amount: str | None, order_by: str | None) -> tuple:
    """(column, descending, nullable) of the board's order."""
    spec = (order_by or (f"-{amount}" if amount else "-stage_entered_at")).strip()
    name = spec.lstrip("-+").strip()
    valid = [*ORDER_COLUMNS, *(f.name for f in entity.fields.values() if f.type in ORDERABLE)]
    if name not in valid:
        raise _bad(f"{entity.name}: cannot order the board by '{name}'", name, valid)
    return table.c[name], spec.startswith("-"), name in entity.fields and not entity.fields[name].required


def _sorted(rows: list, descending: bool) -> list:
    """Rows in board order: by the order column (missing values last), then by id, the same way."""
    present = sorted((r for r in rows if r["key"] is not None), key=lambda r: (r["key"], r["id"]), reverse=descending)
    missing = sorted((r for r in rows if r["key"] is None), key=lambda r: r["id"], reverse=descending)
    return present + missing


def build_board(
    conn: Connection,
    storage: Storage,
    entity: Entity,
    pipeline: str | None = None,
    *,
    limit_per_stage: int | None = 20,
    order_by: str | None = None,
    where: str | None = None,
    access=None,
    path_access=None,
    me: str | None = None,
) -> Board:
    """``access``: the acting user's row filter (metacrm.runtime.access.row_clause), if any;
    ``path_access``: what the ``where`` may see through links (metacrm.runtime.access.path_access);
    ``me``: the acting user's login, the ``:me`` of the ``where``."""
    p = choose_pipeline(entity, pipeline)
    if limit_per_stage is not None and (not isinstance(limit_per_stage, int) or limit_per_stage < 0):
        raise BadReportOption(f"limit per stage must be a whole number >= 0, not {limit_per_stage!r}")
    table = storage.table(entity.name)
    amount = table.c[p.amount] if p.amount else None
    order = graph_order(p)
    key = (storage.model.sha256, entity.name, p.name, where, me)
    shared = access is None and (path_access is None or where is None)
    cached = _cached if shared else (lambda _key, build: build())  # a user's filter is not shared
    filters = (access, path_access, me)
    totals = cached(key, lambda: _totals(storage, entity, table, p, amount, where, filters))
    counts: dict[str, int] = {}
    sums: dict[str, dict] = {}  # stage -> {currency (None: one for all): sum}
    for row in summed(conn, totals):
        counts[row["stage"]] = counts.get(row["stage"], 0) + row["n"]
        if amount is not None:
            per = sums.setdefault(row["stage"], {})
            code = row.get("currency")
            per[code] = per.get(code, Decimal(0)) + (_money(row["amount"]) or Decimal(0))
    money = Money(p, sums=list(sums.values()))
    _, descending, _ = _order(entity, table, p.amount, order_by)  # a bad order_by is refused first
    records: dict[str, list[dict]] = {s: [] for s in order}
    wanted = tuple(s for s in order if s in counts and limit_per_stage != 0)
    rows: list = []
    if wanted:
        query = cached(
            (*key, order_by, limit_per_stage, wanted),
            lambda: _cards(storage, entity, table, p, amount, where, order_by, limit_per_stage, wanted, filters),
        )
        rows = conn.execute(query).mappings().all()
    by_stage: dict[str, list] = {}
    for row in rows:
        by_stage.setdefault(row["stage"], []).append(row)
    for s, stage_rows in by_stage.items():
        for row in _sorted(stage_rows, descending)[:limit_per_stage]:
            record = {
                "id": row["id"],
                "title": row["title"] if row["title"] not in (None, "") else f"{entity.name} {row['id']}",
                "amount": _money(row["amount"]) if amount is not None else None,
                "since": row["since"],
            }
            if money.per_currency:  # the amount at its record's currency's decimals
                record["currency"] = row["currency"]
                if record["amount"] is not None and row["currency"] is not None:
                    record["amount"] = money.at(row["currency"], record["amount"])
            if entity.owner:
                record["owner"] = row["owner"]
            records[s].append(record)

    out = []
    for s in order:
        stage = p.stages[s]
        count = counts.get(s, 0)
        amounts = money.amounts(s, sums.get(s, {})) if amount is not None else None
        column = {
            "stage": s,
            "label": stage.caption,
            "kind": stage.kind,
            "probability": probability(stage),
            "count": count,
            "amount": money.one(amounts),
            "more": count - len(records[s]),
            "records": records[s],
        }
        if money.per_currency:  # a currency field's sums, one per currency, never added
            column["amounts"] = amounts
        out.append(column)
    totals_by_code = None
    if amount is not None:
        totals_by_code = {code: money.at(code, Decimal(0)) for code in money.amounts("", {})}
        for c in out:
            for code, value in (c.get("amounts") or {money.codes[0]: c["amount"]}).items():
                totals_by_code[code] += value
    doc: dict = {
        "entity": entity.name,
        "pipeline": p.name,
        "amount_field": p.amount,
        "count": sum(c["count"] for c in out),
        "amount": money.one(totals_by_code),
        "columns": out,
    }
    if money.currency_field_type:
        doc["currency"] = money.codes[0] if len(money.codes) == 1 else None
    if money.per_currency:
        doc["amounts"] = totals_by_code
    return doc  # type: ignore[return-value]


def _money(value):
    """UNION ALL loses the column type on some dialects: make sure money is Decimal."""
    if value is None or isinstance(value, Decimal):
        return value
    return Decimal(str(value))


_STATEMENTS: dict[tuple, object] = {}


def _cached(key: tuple, build):
    """A board's statements, built once per model version, pipeline, order and limit when no
    ``where`` is given (the board is read often, and building a UNION of a SELECT per stage
    costs about as much as running it on 10,000 records); with a ``where``, built each time."""
    if key[3] is not None:
        return build()
    statement = _STATEMENTS.get(key)
    if statement is None:
        if len(_STATEMENTS) > 512:
            _STATEMENTS.clear()
        statement = _STATEMENTS[key] = build()
    return statement


def _filters(storage: Storage, entity: Entity, table, p, where: str | None, access=(None, None)) -> list:
    """``access``: (the user's row filter, what the ``where`` may see through links[, the user's login])."""
    rows, paths, *more = access
    filters = [table.c.pipeline == p.name] if entity.multi_pipeline else []
    if rows is not None:
        filters.append(rows)
    if where:
        from ..expr import compile_sql

        filters.append(compile_sql(storage, entity.name, where, {"me": more[0] if more else None}, access=paths))
    return filters


def _totals(storage: Storage, entity: Entity, table, p, amount, where: str | None, access=(None, None)):
    """Count and sum per stage (the covering (stage, amount) index)."""
    amounts, per = amount_columns(p, table)  # a currency field whose records name theirs: per currency
    columns = [table.c.stage, func.count().label("n"), *amounts]
    filters = _filters(storage, entity, table, p, where, access)
    return select(*columns).where(*filters).group_by(table.c.stage, *per)


def _cards(
    storage: Storage, entity: Entity, table, p, amount, where, order_by, limit_per_stage, wanted, access=(None, None)
):
    """The records shown: per stage, the first ones in index order."""
    filters = _filters(storage, entity, table, p, where, access)
    title = table.c[entity.title] if entity.title else None
    columns = [
        table.c.id,
        table.c.stage,
        table.c.stage_entered_at.label("since"),
        (title if title is not None else literal(None)).label("title"),
        (amount if amount is not None else literal(None)).label("amount"),
        (table.c.owner if entity.owner else literal(None)).label("owner"),
    ]
    _, per = amount_columns(p, table)
    if per:
        columns.append(per[0].label("currency"))
    column, descending, nullable = _order(entity, table, p.amount, order_by)
    columns.append(column.label("key"))
    sort = [column.desc(), table.c.id.desc()] if descending else [column.asc(), table.c.id.asc()]
    if limit_per_stage is None:
        return select(*columns).where(*filters, table.c.stage.in_(wanted))
    # per stage, the first records in index order; records without a value apart, so that no
    # dialect has to sort NULLs against its index order
    parts = []
    for s in wanted:
        branch = select(*columns).where(*filters, table.c.stage == s)
        if nullable:
            parts.append(branch.where(column.is_not(None)).order_by(*sort).limit(limit_per_stage))
            parts.append(branch.where(column.is_(None)).order_by(sort[1]).limit(limit_per_stage))
        else:
            parts.append(branch.order_by(*sort).limit(limit_per_stage))
    subqueries = [select(part.subquery()) for part in parts]
    return union_all(*subqueries) if len(subqueries) > 1 else subqueries[0]
