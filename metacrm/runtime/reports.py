"""Reports: the funnel (from the stage history, not only the snapshot) and grouped results.

The funnel of an entity's pipeline (``crm.funnel``, ``metacrm report funnel``) lists the
pipeline's stages in graph order: the open stages in topological order of the forward
transitions (reopen moves left out; the initial stage first; declaration order breaks ties
and cycles), then the won stages, then the lost ones. Per stage:

``now``
    records in the stage now. With ``as_of``: the stage each record was in at that moment,
    read from the history (its last history row with ``at`` <= as_of); records created after
    as_of do not count.
``reached``
    distinct records whose history has a row entering the stage (``to_stage``: the creation
    row, moves, reopens, and ``import`` placements). The initial stage: every record. A record
    imported straight into a later stage (``create_many(import_stages=True)``) reached only
    its initial stage and that one, not the stages between.
``amount``
    the sum of the pipeline's money field (``amount:`` next to ``initial:``) over the records
    ``now`` in the stage; ``None`` when the pipeline has no amount field. Decimal in Python, a
    string ("1500.00") in JSON, as money is everywhere in metacrm. With ``as_of`` it is today's
    value of the field of the records that were in the stage then (the history records stages,
    not field values).
``probability`` / ``forecast``
    the stage's declared probability (won stages 1, lost stages 0, an open stage without one:
    ``None``); ``forecast`` = amount x probability (``None`` without a probability). The
    document's ``forecast`` sums the forecasts of the open stages.
``conversion_next``
    the share of the records that reached the stage and moved on: that also reached some
    stage ahead of it, ahead meaning reachable from it through forward (non-reopen)
    transitions, lost stages excepted. With skip transitions (qualified -> invoice) a skipped
    stage does not lower the conversion of the stage before it. ``None`` for closed stages.
``conversion_won``
    the share of the records that reached the stage which are now (at as_of) in a won stage.
``median_seconds``
    the median of ``seconds_in_stage`` over the moves out of the stage (history rows with
    ``source`` move or reopen; import placements carry no real time and are left out), as a
    float; ``None`` when nothing left the stage (the mean of the middle two values for an
    even count): the same value on both databases.

Conversions and the document's ``win_rate`` (won / (won + lost) among the records closed now)
are floats rounded to 4 places, ``None`` when the denominator is 0. ``date_from`` / ``date_to``
select the records by their ``created_at`` (a cohort: every number above is computed over those
records only); a date bound is a whole day of the model's ``timezone:`` (UTC by default;
``date_to`` inclusive), a datetime bound is an instant (without a zone: local time there).
``as_of`` given as a date means the end of that local day.

``by="owner"`` (or a choice, text or single link field) returns a list of funnels, one per
value that has records, each the same document plus ``"by"``, ``"value"`` and ``"label"``
(ordered by label, records without a value last). Owner and fields are the current ones.

Queries. ``now``, amounts, ``reached`` and both conversions come from one scan of the
records: ``SELECT stage, reached, count(*), sum(amount) ... GROUP BY stage, reached`` (plus
the ``by`` column), where ``reached`` is the record's bitmask of the stages it has entered
(kept by creation, every move and import placement: see metacrm.storage.tables). The distinct
(stage, mask) pairs are few (one per path through the graph), and the bits are read here:
a record reached stage s when bit s is set, moved on from it when a bit of a stage ahead is
set too. The covering ``(stage, reached, amount)`` index makes that scan read the index
only. The medians read the history's ``(entity, pipeline, from_stage, seconds_in_stage,
source)`` index alone: a count of the moves out of each stage, then the middle value(s) of
each by OFFSET in index order; on 1M deals 1.5x faster than percentile_cont on PostgreSQL,
2x faster than a Python aggregate and 10x faster than a row_number() window on SQLite. With
``by``, ``date_from`` or ``date_to`` the medians join the moves to the records in one GROUP
BY (percentile_cont on PostgreSQL, an aggregate registered on the connection on SQLite).
Measured on 1M deals with 2.8M history rows (bench/bench_stages.py): the funnel takes
about 0.4 s on either database, against 0.12-0.15 s for the bare ``GROUP BY stage`` and 4-5 s
for the former per-record pass over the history.

``as_of`` replays the history instead (the masks know what was reached, not when): one
statement over the history rows up to that moment, a window function picking each record's
last row, a 0/1 column per stage per record; it reads the whole history (4-6 s on 1M
records). A pipeline with more than 62 stages (bits past the 62nd are not kept) is counted
the same way from the history.

The group report (``crm.report_group``, ``metacrm report group``) counts records, and sums a
money or number field, grouped by a field (choice, text, boolean, integer, ``owner``,
``stage``, ``pipeline``, or a single link, shown by the target's title; the targets the acting
user may not read are one group, ``"hidden": true``: docs/hidden.md), optionally by period
(``month`` "2024-03" or ``quarter`` "2024-Q1") of ``created_at`` or of another date or
datetime (``date``: a field, or ``closed_at``, ``stage_entered_at``, ``updated_at``), in the
model's time zone (a deal created at 23:30 UTC on 31 March is an April deal in Moscow).
``date_from`` / ``date_to`` filter on that same date. Rows come ordered by period (records
without the date last), then by the sum (or the count) descending, then by label.
"""

from __future__ import annotations

import builtins
import datetime as dt
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, overload

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Text,
    and_,
    case,
    cast,
    distinct,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ..errors import ValidationError
from ..expr.functions import exact_sum, overflowed, split_sums
from ..model.metamodel import Entity, Pipeline, Stage
from ..model.suggest import did_you_mean, listing
from ..storage import naming
from ..storage.tables import Storage
from ..types import Board, Funnel, FunnelGroup, GroupReport, When
from .access import SYSTEM, Actor
from .protocol import Host
from .titles import HIDDEN, HIDDEN_KEY, read_titles, visible_key

UTC = dt.UTC
CENT = Decimal("0.01")
MOVES_OUT = ("move", "reopen")
PERIODS = ("month", "quarter")
GROUP_TYPES = ("choice", "string", "email", "phone", "url", "boolean", "integer", "user")
SUM_TYPES = ("money", "currency", "integer", "duration", "decimal", "percent")


class BadReportOption(ValidationError):
    """A report asked for what the model does not have (a pipeline, a field, a period) or for
    a malformed date: bad usage rather than refused data (the CLI exits 2)."""


def _bad(message: str, name: object, valid) -> BadReportOption:
    valid = list(valid)
    hint = did_you_mean(name, valid)
    return BadReportOption(message + (f" ({hint})" if hint else "") + f"; valid: {listing(valid)}")


# -- the pipeline --------------------------------------------------------------------------------
def choose_pipeline(entity: Entity, name: str | None) -> Pipeline:
    if not entity.has_stages:
        raise BadReportOption(f"{entity.name} has no stages: no funnel or board for it")
    if name is None:
        return entity.default_pipeline
    if name not in entity.pipelines:
        raise _bad(f"{entity.name}: unknown pipeline '{name}'", name, entity.pipelines)
    return entity.pipelines[name]


def graph_order(pipeline: Pipeline) -> list[str]:
    """Open stages in topological order of the forward moves (initial first, declaration order
    for ties and cycles), then won stages, then lost stages."""
    index = {name: i for i, name in enumerate(pipeline.stages)}
    index[pipeline.initial] = -1
    open_ = [s for s in pipeline.stages if not pipeline.stages[s].closed]
    indegree = dict.fromkeys(open_, 0)
    successors: dict[str, set[str]] = {s: set() for s in open_}
    for t in pipeline.transitions:
        if not t.reopen and t.source in indegree and t.target in indegree and t.target not in successors[t.source]:
            successors[t.source].add(t.target)
            indegree[t.target] += 1
    order: list[str] = []
    remaining = set(open_)
    while remaining:
        ready = [s for s in remaining if indegree[s] == 0] or list(remaining)  # a cycle: declaration order
        stage = min(ready, key=index.__getitem__)
        remaining.discard(stage)
        order.append(stage)
        for nxt in successors[stage]:
            indegree[nxt] -= 1
    return order + list(pipeline.won) + list(pipeline.lost)


def stages_ahead(pipeline: Pipeline, stage: str) -> list[str]:
    """Stages reachable from ``stage`` by forward moves, lost stages and itself excepted."""
    seen, todo = set(), [stage]
    while todo:
        for target, t in pipeline.adjacency.get(todo.pop(), {}).items():
            if not t.reopen and target not in seen:
                seen.add(target)
                todo.append(target)
    return [s for s in pipeline.stages if s in seen and s != stage and pipeline.stages[s].kind != "lost"]


def probability(stage: Stage) -> float | None:
    if stage.kind == "won":
        return 1.0
    if stage.kind == "lost":
        return 0.0
    return stage.probability


# -- dates ---------------------------------------------------------------------------------------
def parse_when(value, what: str, zone: str | None = None) -> dt.date | dt.datetime | None:
    """A date or an aware UTC datetime from a date, datetime or text (metacrm.dates, the one
    date parser: ``2026-12-10``, ``10.12.2026``, with or without a time and a zone); a time
    without a zone is local time of ``zone``."""
    from ..dates import DateError, parse_date_or_datetime

    if value is None:
        return None
    try:
        return parse_date_or_datetime(value, zone)
    except DateError as exc:
        raise BadReportOption(f"{what}: {exc}") from None


def lower_bound(value, zone: str | None = None) -> dt.datetime | None:
    """Inclusive: a date means the start of that day in ``zone`` (UTC when None)."""
    if value is None or isinstance(value, dt.datetime):
        return value
    from ..dates import parse_datetime

    return parse_datetime(value, zone)


def upper_bound(value, zone: str | None = None) -> dt.datetime | None:
    """Exclusive: a date means the start of the next day in ``zone``; a datetime, just after it."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value + dt.timedelta(microseconds=1)
    from ..dates import parse_datetime

    return parse_datetime(value + dt.timedelta(days=1), zone)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# -- grouping keys -------------------------------------------------------------------------------
@dataclass
class GroupKey:
    name: str
    column: object
    labels: Callable[[Connection, list], dict] = field(default=lambda conn, values: {})
    link: bool = False  # a link: the targets the user may not read are one group (value HIDDEN_KEY)
    plain: object = None  # a link's own column (``column`` maps the hidden targets to HIDDEN_KEY)

    def item(self, value, labels: Mapping) -> dict:
        """``value`` and ``label`` of a group (and ``hidden`` for a link key: metacrm.runtime.titles)."""
        if not self.link:
            return {"value": value, "label": _label(labels, value)}
        if value == HIDDEN_KEY:
            return {"value": None, "label": None, "hidden": True}
        return {"value": value, "label": _label(labels, value), "hidden": False}


def group_names(entity: Entity) -> list[str]:
    """What records of ``entity`` can be grouped by (``by`` of both reports), in this order."""
    valid = [*(["owner"] if entity.owner else []), *(["stage"] if entity.has_stages else [])]
    valid += ["pipeline"] if entity.multi_pipeline else []
    valid += [f.name for f in entity.fields.values() if f.type in GROUP_TYPES]
    return valid + [link.name for link in entity.links.values() if not link.many and not link.polymorphic]


def sum_names(entity: Entity) -> list[str]:
    """The money and number fields the group report can sum."""
    return [f.name for f in entity.fields.values() if f.type in SUM_TYPES]


def date_names(entity: Entity) -> list[str]:
    """The dates a period or a date filter of the group report can read."""
    valid = ["created_at", "updated_at"] + (["stage_entered_at", "closed_at"] if entity.has_stages else [])
    return valid + [f.name for f in entity.fields.values() if f.type in ("date", "datetime")]


def group_key(
    storage: Storage, entity: Entity, name: str, *, what: str = "by", actor: Actor = SYSTEM, pipeline: str | None = None
) -> GroupKey:
    """What records can be grouped by: owner, stage, pipeline, a plain field, a single link.
    A link's groups are its targets, by title; those ``actor`` may not read are one group.
    Stages are captioned from ``pipeline`` when given, else from every pipeline."""
    table = storage.table(entity.name)
    valid = group_names(entity)
    if name not in valid:
        reason = "cannot group by" if entity.member(name) or name in ("owner", "stage") else "unknown field"
        raise _bad(f"{entity.name}: {what}: {reason} '{name}'", name, valid)
    if name == "stage":
        chosen = [choose_pipeline(entity, pipeline)] if pipeline is not None else reversed(entity.pipelines.values())
        captions = {s.name: s.caption for p in chosen for s in p.stages.values()}
        return GroupKey(name, table.c.stage, lambda conn, values: captions)
    if name == "pipeline":
        captions = {p.name: p.caption for p in entity.pipelines.values()}
        return GroupKey(name, table.c.pipeline, lambda conn, values: captions)
    if name == "owner":
        return GroupKey(name, table.c.owner)
    if name in entity.fields and entity.fields[name].type == "user":  # a link to users: by name
        from .users import user_names

        return GroupKey(name, table.c[name], lambda conn, values: user_names(conn, storage, values))
    if name in entity.fields:
        f = entity.fields[name]
        options = {o.value: o.label or o.value for o in f.options}
        return GroupKey(name, table.c[name], lambda conn, values: options)
    target = entity.links[name].target

    def titles(conn: Connection, values: list) -> dict:
        return read_titles(conn, storage, actor, target, values)

    column = visible_key(storage, actor, target, table.c[naming.link_column(name)])
    return GroupKey(name, column, titles, link=True, plain=table.c[naming.link_column(name)])


def _merge_hidden(rows, labels: Mapping) -> list[dict]:
    """Group rows of a link's own column: the targets without a label (those the user may not
    read) summed into one HIDDEN_KEY row per period. Grouping by the plain column and merging
    here is 3x faster on SQLite than grouping by the CASE of ``visible_key`` (200k deals)."""
    out: dict = {}
    for row in rows:
        value = row["value"]
        if value is not None and value not in labels:
            value = HIDDEN_KEY
        key = (row.get("period"), value, row.get("currency"))  # amounts in two currencies never add
        merged = out.get(key)
        if merged is None:
            out[key] = {**row, "value": value}
            continue
        merged["count"] += row["count"]
        if row.get("sum") is not None:
            merged["sum"] = row["sum"] if merged["sum"] is None else merged["sum"] + row["sum"]
    return list(out.values())


def _label(labels: Mapping, value) -> str | None:
    if value is None:
        return None
    return labels.get(value, str(value) if not isinstance(value, bool) else ("yes" if value else "no"))


def _group_order(item: tuple, hidden: bool = False) -> tuple:
    """Groups by label, the group of hidden link targets after them, the one without a value last."""
    value, label = item
    return (value is None, not hidden, str(label if label is not None else ""), str(value))


# -- medians -------------------------------------------------------------------------------------
class _Median:
    """SQLite aggregate: the median of the non-null values (the mean of the middle two)."""

    def __init__(self):
        self.values: list = []

    def step(self, value):
        if value is not None:
            self.values.append(value)

    def finalize(self):
        return float(statistics.median(self.values)) if self.values else None


def median_of(conn: Connection, column):
    if conn.dialect.name == "postgresql":
        return func.percentile_cont(0.5).within_group(column)
    conn.connection.driver_connection.create_aggregate("metacrm_median", 1, _Median)
    return func.metacrm_median(column)


# -- the funnel ----------------------------------------------------------------------------------
@dataclass
class _Tally:
    """Sums over the grouped rows of one funnel (one owner, or all)."""

    now: dict = field(default_factory=dict)
    amount: dict = field(default_factory=dict)
    reached: dict = field(default_factory=dict)
    advanced: dict = field(default_factory=dict)
    reached_won: dict = field(default_factory=dict)
    medians: dict = field(default_factory=dict)

    def add_now(self, stage: str, count: int, amount, currency: str | None = None) -> None:
        """``amount``: the sum of the amount field over ``count`` records of ``stage``, all in
        ``currency`` (a currency field's records are summed per currency, never added across)."""
        self.now[stage] = self.now.get(stage, 0) + count
        if amount is not None:
            sums = self.amount.setdefault(stage, {})
            sums[currency] = sums.get(currency, Decimal(0)) + amount

    def add_reach(self, won: bool, reached: dict, advanced: dict) -> None:
        for name, value in reached.items():
            self.reached[name] = self.reached.get(name, 0) + value
            if won:
                self.reached_won[name] = self.reached_won.get(name, 0) + value
        for name, value in advanced.items():
            self.advanced[name] = self.advanced.get(name, 0) + value


def build_funnel(
    conn: Connection,
    storage: Storage,
    entity: Entity,
    pipeline: str | None = None,
    *,
    date_from=None,
    date_to=None,
    as_of=None,
    by: str | None = None,
    access=None,
    actor: Actor = SYSTEM,
) -> Funnel | list[FunnelGroup]:
    p = choose_pipeline(entity, pipeline)
    zone = storage.model.timezone
    date_from, date_to = parse_when(date_from, "from", zone), parse_when(date_to, "to", zone)
    as_of = parse_when(as_of, "as of", zone)
    key = group_key(storage, entity, by, actor=actor) if by else None
    if key is not None and by == "stage":
        raise BadReportOption(f"{entity.name}: a funnel is already by stage; by: owner or a field")
    order = graph_order(p)
    table = storage.table(entity.name)
    cutoff = upper_bound(as_of, zone)
    filters = _record_filters(entity, table, p, date_from, date_to, zone)
    if access is not None:  # the acting user's rows only
        filters.append(access)
    grouping = [key.column] if key is not None else []
    tallies: dict = {}

    def tally(grp) -> _Tally:
        return tallies.setdefault(grp, _Tally())

    bits = storage.reached_bits[(entity.name, p.name)]
    if cutoff is None and all(bits.values()):
        _from_masks(conn, table, p, order, bits, filters, grouping, tally)
    else:
        _from_history(conn, storage, entity, table, p, order, filters, grouping, cutoff, tally)
    for stage, grp, value in _medians(conn, storage, entity, table, p, key, cutoff, date_from, date_to, access):
        tally(grp).medians[stage] = value

    meta = {
        "entity": entity.name,
        "pipeline": p.name,
        "amount_field": p.amount,
        "from": date_from,
        "to": date_to,
        "as_of": as_of,
    }
    if key is None:
        return _document(p, order, tallies.get(None, _Tally()), meta)
    labels = key.labels(conn, list(tallies))
    groups = [(v, key.item(v, labels)) for v in tallies]
    grouped = entity.fields.get(by)
    rank = grouped.option_rank if grouped is not None and any(o.order is not None for o in grouped.options) else None
    groups.sort(
        key=lambda g: (
            (g[1]["value"] is None, rank.get(g[1]["value"], len(rank))) if rank else (),
            *_group_order((g[1]["value"], g[1]["label"]), g[1].get("hidden", False)),
        )
    )
    return [{"by": by, **item, **_document(p, order, tallies[value], meta)} for value, item in groups]


def _from_masks(conn, table, p: Pipeline, order, bits, filters, grouping, tally) -> None:
    """Now, amounts, reached and both conversions in one scan of the records: a GROUP BY of
    stage and ``reached`` mask (a few dozen distinct pairs), the bits read here."""
    columns = [table.c.stage, table.c.reached, func.count().label("n"), *[c.label("grp") for c in grouping]]
    amounts, per = amount_columns(p, table)
    query = select(*columns, *amounts).where(*filters).group_by(table.c.stage, table.c.reached, *grouping, *per)
    ahead = {s: sum(bits[t] for t in stages_ahead(p, s)) for s in order if not p.stages[s].closed}
    won = set(p.won)
    for row in summed(conn, query):
        stage, mask, n = row["stage"], row["reached"], row["n"]
        reached = {s: n for s in order if mask & bits[s]}
        advanced = {s: n for s, later in ahead.items() if mask & later and (s == p.initial or s in reached)}
        t = tally(row["grp"] if grouping else None)
        t.add_now(stage, n, row["amount"] if p.amount else None, row["currency"] if per else None)
        t.add_reach(stage in won, reached, advanced)


def _from_history(conn, storage: Storage, entity: Entity, table, p: Pipeline, order, filters, grouping, cutoff, tally):
    """The same numbers from the stage history (as of a moment, or for a pipeline with more
    stages than the mask has bits): one row per record with a 0/1 column per stage entered."""
    hist = storage.history_table
    flag = {s: f"r{i}" for i, s in enumerate(order)}

    def of(row) -> _Tally:
        return tally(row["grp"] if grouping else None)

    where = [hist.c.entity == entity.name, hist.c.pipeline == p.name]
    if cutoff is None:
        # now and amounts from the records alone (the covering index); the flags need only the
        # rows entering a stage after the initial one (every record entered that)
        snapshot = [table.c.stage, func.count().label("n"), *[c.label("grp") for c in grouping]]
        amounts, per = amount_columns(p, table)
        query = select(*snapshot, *amounts).where(*filters).group_by(table.c.stage, *grouping, *per)
        for row in summed(conn, query):
            of(row).add_now(row["stage"], row["n"], row["amount"] if p.amount else None, row["currency"] if per else None)
        where.append(hist.c.to_stage != p.initial)
        per_record = select(hist.c.record_id, *_flags(hist.c, flag)).where(*where).group_by(hist.c.record_id)
        stage_col = table.c.stage
    else:
        where.append(hist.c.at < cutoff)
        last = func.row_number().over(partition_by=hist.c.record_id, order_by=(hist.c.at.desc(), hist.c.id.desc()))
        src = select(hist.c.record_id, hist.c.to_stage, last.label("rn")).where(*where).subquery("w").c
        stage_at = func.max(case((src.rn == 1, src.to_stage))).label("stage_at")
        per_record = select(src.record_id, *_flags(src, flag), stage_at).group_by(src.record_id)
    r = per_record.subquery("r")
    if cutoff is not None:
        stage_col = r.c.stage_at

    columns = [stage_col.label("stage"), *[c.label("grp") for c in grouping]]
    per = []
    if cutoff is not None:
        columns.append(func.count().label("n"))
        amounts, per = amount_columns(p, table)
        columns += amounts
    columns += [func.sum(r.c[flag[s]]).label(f"reached_{flag[s]}") for s in order]
    for s in order:
        if p.stages[s].closed:
            continue
        moved_on = or_(*[r.c[flag[t]] == 1 for t in stages_ahead(p, s)], literal(False))
        if s != p.initial:
            moved_on = and_(r.c[flag[s]] == 1, moved_on)
        columns.append(func.sum(case((moved_on, 1), else_=0)).label(f"advanced_{flag[s]}"))
    query = select(*columns).select_from(r.join(table, table.c.id == r.c.record_id)).where(*filters)
    won = set(p.won)
    for row in summed(conn, query.group_by(stage_col, *grouping, *per)):
        if cutoff is not None:  # the stages as they were: now and amounts come from here too
            of(row).add_now(row["stage"], row["n"], row["amount"] if p.amount else None, row["currency"] if per else None)
        reached = {s: int(row[f"reached_{flag[s]}"] or 0) for s in order}
        advanced = {s: int(row[f"advanced_{flag[s]}"] or 0) for s in order if f"advanced_{flag[s]}" in row}
        of(row).add_reach(row["stage"] in won, reached, advanced)


def amount_columns(p: Pipeline, table) -> tuple[list, list]:
    """(columns, extra GROUP BY) summing the pipeline's amount field: its sum, and for a
    currency field whose currency a record names, that currency (one sum per currency)."""
    if not p.amount:
        return [], []
    columns = [exact_sum(table.c[p.amount]).label("amount")]
    money = p.money_field
    if money is None or money.type != "currency" or not money.currency_field:
        return columns, []
    currency = table.c[money.currency_field]
    return [*columns, currency.label("currency")], [currency]


def summed(conn: Connection, query, *, mappings: bool = True) -> list:
    """The rows of a query summing with :class:`exact_sum`: when a sum overflows SQLite's
    64-bit integers, the query runs again with exact sums in halves (see split_sums)."""
    try:
        result = conn.execute(query)
        return result.mappings().all() if mappings else result.all()
    except DBAPIError as exc:
        if conn.dialect.name != "sqlite" or not overflowed(exc):
            raise
    result = conn.execute(split_sums(query))
    return result.mappings().all() if mappings else result.all()


def rebuild_reached(conn: Connection, storage: Storage, entity: Entity) -> int:
    """Recompute every record's ``reached`` mask from the stage history (the stages its history
    rows entered, and its current stage); returns the number of records. For a migration that
    adds stages to an entity, or inserts, reorders or renames stages of a pipeline (the bits
    follow the declaration order), and for records written before the mask existed."""
    table, hist = storage.table(entity.name), storage.history_table
    done = 0
    for p in entity.pipelines.values():
        bits = storage.reached_bits[(entity.name, p.name)]

        def bit_of(column, bits=bits):
            return case(
                {s: literal(b, BigInteger()) for s, b in bits.items()}, value=column, else_=literal(0, BigInteger())
            )

        entered = (
            select(cast(func.coalesce(func.sum(distinct(bit_of(hist.c.to_stage))), 0), BigInteger()))
            .where(hist.c.entity == entity.name, hist.c.pipeline == p.name, hist.c.record_id == table.c.id)
            .scalar_subquery()
        )
        result = conn.execute(
            update(table).where(table.c.pipeline == p.name).values(reached=entered.op("|")(bit_of(table.c.stage)))
        )
        done += result.rowcount
    return done


def _flags(columns, flag: Mapping[str, str]) -> list:
    return [func.max(case((columns.to_stage == s, 1), else_=0)).label(name) for s, name in flag.items()]


def _record_filters(entity: Entity, table, pipeline: Pipeline, date_from, date_to, zone: str | None = None) -> list:
    filters = []
    if entity.multi_pipeline:  # with one pipeline every record is in it: keep the covering index usable
        filters.append(table.c.pipeline == pipeline.name)
    if date_from is not None:
        filters.append(table.c.created_at >= lower_bound(date_from, zone))
    if date_to is not None:
        filters.append(table.c.created_at < upper_bound(date_to, zone))
    return filters


def _medians(conn, storage, entity, table, p, key, cutoff, date_from, date_to, access=None):
    """(stage left, group, median seconds) over the moves out of each stage."""
    hist = storage.history_table
    where = [
        hist.c.entity == entity.name,
        hist.c.pipeline == p.name,
        hist.c.from_stage.is_not(None),
        hist.c.seconds_in_stage.is_not(None),
        hist.c.source.in_(MOVES_OUT),
    ]
    whole = key is None and cutoff is None and date_from is None and date_to is None and access is None
    if whole:
        yield from _middles(conn, hist, where)
        return
    columns = [hist.c.from_stage, median_of(conn, hist.c.seconds_in_stage).label("median")]
    if key is not None:
        columns.append(key.column.label("grp"))
    query = select(*columns).where(*where)
    if cutoff is not None:
        query = query.where(hist.c.at < cutoff)
    filters = _record_filters(entity, table, p, date_from, date_to, storage.model.timezone)
    if access is not None:
        filters.append(access)
    if key is not None or date_from is not None or date_to is not None or access is not None:
        query = query.join_from(hist, table, table.c.id == hist.c.record_id).where(*filters)
    query = query.group_by(hist.c.from_stage, *([key.column] if key is not None else []))
    for row in conn.execute(query).mappings():
        value = row["median"]
        yield row["from_stage"], row["grp"] if key is not None else None, None if value is None else float(value)


def _middles(conn, hist, where):
    """Medians read from the (entity, pipeline, from_stage, seconds_in_stage, source) index: a
    count per stage, then the middle one or two values by OFFSET, in index order (stepping
    over index entries beats sorting them, or calling a Python aggregate per row)."""
    counts = select(hist.c.from_stage, func.count()).where(*where).group_by(hist.c.from_stage)
    for stage, n in conn.execute(counts).all():
        middle = (
            select(hist.c.seconds_in_stage)
            .where(*where, hist.c.from_stage == stage)
            .order_by(hist.c.seconds_in_stage)
            .limit(2 - n % 2)
            .offset((n - 1) // 2)
        )
        values = conn.execute(middle).scalars().all()
        yield stage, None, sum(values) / len(values)


def _document(p: Pipeline, order: list[str], tally: _Tally, meta: dict[str, Any]) -> Funnel:
    total = sum(tally.now.get(s, 0) for s in order)
    won = sum(tally.now.get(s, 0) for s in p.won)
    lost = sum(tally.now.get(s, 0) for s in p.lost)
    money = Money(p, tally)
    stages, forecast_total = [], {code: Decimal(0) for code in money.codes} if p.amount else None
    for s in order:
        stage = p.stages[s]
        reached = total if s == p.initial else tally.reached.get(s, 0)
        reached_won = won if s == p.initial else tally.reached_won.get(s, 0)
        amounts = money.amounts(s) if p.amount else None
        chance = probability(stage)
        forecasts = None
        if amounts is not None and chance is not None:
            forecasts = {code: money.at(code, amount * Decimal(str(chance))) for code, amount in amounts.items()}
            if not stage.closed:
                for code, value in forecasts.items():
                    forecast_total[code] += value
        item = {
            "stage": s,
            "label": stage.caption,
            "kind": stage.kind,
            "now": tally.now.get(s, 0),
            "reached": reached,
            "amount": money.one(amounts),
            "probability": chance,
            "forecast": money.one(forecasts),
            "conversion_next": None if stage.closed else _ratio(tally.advanced.get(s, 0), reached),
            "conversion_won": _ratio(reached_won, reached),
            "median_seconds": tally.medians.get(s),
        }
        if money.per_currency:  # a currency field's amounts, one per currency, never added
            item["amounts"] = amounts
            item["forecasts"] = forecasts
        stages.append(item)
    doc = {
        **meta,
        "count": total,
        "won": won,
        "lost": lost,
        "win_rate": _ratio(won, won + lost),
        "forecast": money.one(forecast_total),
        "stages": stages,
    }
    if money.currency_field_type:
        doc["currency"] = money.codes[0] if len(money.codes) == 1 else None
    if money.per_currency:
        doc["forecasts"] = forecast_total
    return doc


class Money:
    """The amounts of a funnel or a board: money to the cent; a currency field's at its
    currency's decimals, summed per currency. ``codes``: the currencies the amounts are in
    (a fixed currency's code; for a field whose records name their currency, those present,
    by code; ``[None]`` for plain money). ``one(sums)`` is the single figure a stage, a column
    or the document shows: the sum when every amount is in one currency, None when several."""

    def __init__(self, p: Pipeline, tally: _Tally | None = None, sums: list[dict] | None = None):
        f = p.money_field
        self.currency_field_type = f is not None and f.type == "currency"
        self.per_currency = self.currency_field_type and bool(f.currency_field)
        found = {code for per in (tally.amount.values() if tally else sums or ()) for code in per}
        if self.per_currency:
            self.codes = sorted(code for code in found if code is not None) or [None]
        else:
            self.codes = [f.currency if self.currency_field_type else None]
        self.places = f.decimals if f is not None and f.decimals is not None else 2
        self.tally = tally

    def at(self, code: str | None, value: Decimal) -> Decimal:
        places = self.places
        if self.per_currency and code is not None:
            from ..model.field_types import currency_precision

            places = currency_precision(code)
        return value.quantize(Decimal(1).scaleb(-places))

    def amounts(self, stage: str, sums: dict | None = None) -> dict:
        sums = self.tally.amount.get(stage, {}) if sums is None else sums
        if not self.per_currency:
            return {self.codes[0]: self.at(self.codes[0], builtins.sum(sums.values(), Decimal(0)))}
        return {code: self.at(code, sums.get(code, Decimal(0))) for code in self.codes if code is not None}

    def one(self, sums: dict | None):
        if sums is None:
            return None
        if len(sums) > 1:
            return None
        (value,) = sums.values() or [Decimal(0).quantize(Decimal(1).scaleb(-self.places))]
        return value


# -- the group report ----------------------------------------------------------------------------
def date_column(storage: Storage, entity: Entity, name: str | None):
    """The column a period or a date filter reads, and whether it holds dates (not datetimes)."""
    table = storage.table(entity.name)
    name = name or "created_at"
    valid = date_names(entity)
    if name not in valid:
        raise _bad(f"{entity.name}: date: '{name}' is not a date or datetime field", name, valid)
    return table.c[name], name in entity.fields and entity.fields[name].type == "date"


def period_expr(conn: Connection, column, period: str, is_date: bool, zone: str | None = None):
    """The period of a date, or of a datetime read as local time of ``zone`` (UTC when None)."""
    zone = zone or "UTC"
    if conn.dialect.name == "postgresql":
        moment = cast(column, DateTime()) if is_date else func.timezone(literal(zone, Text()), column)
        return func.date_trunc(period, moment, type_=DateTime())
    if not is_date and zone != "UTC":  # SQLite stores UTC text: local time by a registered function
        column = func.metacrm_localtime(column, literal(zone, Text()), type_=Text())
    year = func.strftime("%Y", column)
    if period == "month":
        return func.strftime("%Y-%m", column)
    quarter = (cast(func.strftime("%m", column), Integer()) + 2) // 3
    return year + "-Q" + cast(quarter, Text())


def _period_text(value, period: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if period == "month":
        return f"{value.year}-{value.month:02d}"
    return f"{value.year}-Q{(value.month - 1) // 3 + 1}"


def sum_column(storage: Storage, entity: Entity, name: str):
    valid = sum_names(entity)
    if name not in valid:
        reason = "cannot sum" if name in entity.fields else "unknown field"
        raise _bad(f"{entity.name}: sum: {reason} '{name}' (a money or number field)", name, valid)
    return storage.table(entity.name).c[name]


def build_group(
    conn: Connection,
    storage: Storage,
    entity: Entity,
    by: str,
    *,
    sum: str | None = None,  # noqa: A002 - the CLI's --sum
    period: str | None = None,
    date: str | None = None,
    date_from=None,
    date_to=None,
    access=None,
    actor: Actor = SYSTEM,
    pipeline: str | None = None,
) -> GroupReport:
    key = group_key(storage, entity, by, actor=actor, pipeline=pipeline)
    if period is not None and period not in PERIODS:
        raise _bad(f"{entity.name}: unknown period '{period}'", period, PERIODS)
    date_col, is_date = date_column(storage, entity, date)
    zone = storage.model.timezone
    date_from, date_to = parse_when(date_from, "from", zone), parse_when(date_to, "to", zone)
    table = storage.table(entity.name)
    column = key.plain if key.link else key.column
    columns = [column.label("value"), func.count().label("count")]
    grouping = [column]
    if sum is not None:
        columns.append(exact_sum(sum_column(storage, entity, sum)).label("sum"))
    per_currency = sum is not None and entity.fields[sum].type == "currency" and bool(entity.fields[sum].currency_field)
    if per_currency:  # one row per currency in each group: amounts in different currencies are never added
        currency_col = table.c[entity.fields[sum].currency_field]
        columns.append(currency_col.label("currency"))
        grouping.append(currency_col)
    if period is not None:
        expr = period_expr(conn, date_col, period, is_date, zone)
        columns.append(expr.label("period"))
        grouping.insert(0, expr)
    query = select(*columns).select_from(table).group_by(*grouping)
    if pipeline is not None:
        query = query.where(table.c.pipeline == choose_pipeline(entity, pipeline).name)
    if access is not None:
        query = query.where(access)
    if date_from is not None:
        query = query.where(date_col >= _edge(lower_bound(date_from, zone), is_date, zone))
    if date_to is not None:
        query = query.where(date_col < _edge(upper_bound(date_to, zone), is_date, zone))
    rows = summed(conn, query)
    labels = key.labels(conn, [r["value"] for r in rows])
    if key.link:
        rows = _merge_hidden(rows, labels)
    out = []
    fixed = entity.fields[sum].currency if sum is not None and entity.fields[sum].type == "currency" else None
    for row in rows:
        item = {"period": _period_text(row["period"], period)} if period else {}
        item.update(key.item(row["value"], labels), count=row["count"])
        if sum is not None:
            item["sum"] = _at_scale(entity, sum, row["sum"], row["currency"] if per_currency else fixed)
        if per_currency or fixed:
            item["currency"] = row["currency"] if per_currency else fixed
        out.append(item)
    measure = "sum" if sum is not None and not per_currency else "count"
    grouped = entity.fields.get(by)
    ranked = grouped is not None and grouped.type == "choice" and any(o.order is not None for o in grouped.options)
    rank = grouped.option_rank if ranked else {}
    out.sort(
        key=lambda i: (
            i.get("period") is None,
            i.get("period") or "",
            # options in their declared ``order``; else the biggest groups first
            (i["value"] is None, rank.get(i["value"], len(rank))) if ranked else -i[measure],
            *_group_order((i["value"], i["label"]), i.get("hidden", False)),
            i.get("currency") or "",
        )
    )
    total: dict = {"count": builtins.sum(i["count"] for i in out)}
    if per_currency or fixed:
        total.update(currency_totals(entity, sum, out))
    elif sum is not None:
        total["sum"] = builtins.sum((i["sum"] for i in out), _zero(entity, sum))
    return {
        "entity": entity.name,
        "by": by,
        "pipeline": pipeline,
        "sum": sum,
        "period": period,
        "date": date or "created_at",
        "from": date_from,
        "to": date_to,
        "rows": out,
        "total": total,
    }


def _edge(moment: dt.datetime, is_date: bool, zone: str | None = None):
    """A bound for a date column is a date: the local day of the moment, the next day when the
    moment falls inside a day (an exclusive upper bound given as a datetime)."""
    if not is_date:
        return moment
    from ..dates import local

    moment = local(moment, zone)
    day = moment.date()
    return day if moment.time() == dt.time() else day + dt.timedelta(days=1)


def _zero(entity: Entity, name: str):
    f = entity.fields[name]
    if f.decimals is not None and f.type in ("money", "currency"):
        return Decimal(0).quantize(Decimal(1).scaleb(-f.decimals))
    return Decimal("0.00") if f.type == "money" else 0


def _at_scale(entity: Entity, name: str, value, currency: str | None):
    """A sum of ``name`` as its records hold it: a currency amount at its currency's decimals."""
    if value is None:
        value = _zero(entity, name)
    if currency is not None and isinstance(value, Decimal):
        from ..model.field_types import currency_precision

        places = currency_precision(currency)
        if places is not None:
            return value.quantize(Decimal(1).scaleb(-places))
    return value


def currency_totals(entity: Entity, name: str, rows: list[dict]) -> dict:
    """The totals of a currency field's sums, never adding two currencies: ``sums`` maps each
    currency (by code; None: records without one) to its total; ``sum`` is the total when the
    rows hold one currency only (None when they hold several), ``currency`` that currency."""
    sums: dict = {}
    for row in rows:
        code = row.get("currency")
        if code is None and not row.get("sum"):
            continue  # records without an amount: nothing to add
        sums[code] = sums.get(code, _zero(entity, name)) + row["sum"]
    ordered = {
        code: _at_scale(entity, name, total, code)
        for code, total in sorted(sums.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    }
    if len(ordered) > 1:
        return {"sum": None, "currency": None, "sums": ordered}
    (code, total), *_ = list(ordered.items()) or [(entity.fields[name].currency, _zero(entity, name))]
    return {"sum": total, "currency": code, "sums": ordered}


# -- charts --------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from ..extras import PNG, import_extra

    import_extra(PNG)  # lazily: only png needs matplotlib (the [png] extra)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _plain_numbers(axis, *, whole: bool = False) -> None:
    """Tick labels as 1 250 000, not 1.25 x 1e6; a fraction keeps its decimals (0.5, not 0).
    ``whole`` (counts): ticks only at whole numbers, so small counts read 0 1 2, not 0 0 1 1."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    def plain(value: float, _) -> str:
        text = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}".rstrip("0")
        return text.replace(",", " ")

    if whole:
        axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_major_formatter(FuncFormatter(plain))


def funnel_png(doc: dict | list[dict], path):
    """Horizontal bars per stage: records that reached it and records in it now (one panel per
    group of a ``by`` funnel, 12 at most). Returns the matplotlib Figure written."""
    docs = doc if isinstance(doc, list) else [doc]
    hidden = max(len(docs) - 12, 0)
    docs = docs[:12] or [{"stages": [], "entity": "", "pipeline": "", "win_rate": None}]
    rows = max(len(docs[0]["stages"]), 1)
    fig = _figure(9, 1.2 + len(docs) * (0.45 * rows + 0.9))
    axes = fig.subplots(len(docs), 1, squeeze=False)[:, 0]
    for ax, d in zip(axes, docs, strict=True):
        labels = [s["label"] for s in d["stages"]]
        ys = list(range(len(labels)))
        reached = [s["reached"] for s in d["stages"]]
        now = [s["now"] for s in d["stages"]]
        ax.barh([y - 0.2 for y in ys], reached, height=0.4, color="#9ecae1", label="reached")
        ax.barh([y + 0.2 for y in ys], now, height=0.4, color="#3182bd", label="now")
        for y, a, b in zip(ys, reached, now, strict=True):
            ax.text(a, y - 0.2, f" {a}", va="center", fontsize=8)
            ax.text(b, y + 0.2, f" {b}", va="center", fontsize=8)
        ax.set_yticks(ys, labels)
        ax.invert_yaxis()
        rate = d.get("win_rate")
        title = f"{d['entity']} · {d['pipeline']}" + (f" · win rate {rate:.1%}" if rate is not None else "")
        if "by" in d:
            shown = HIDDEN if d.get("hidden") else d["label"] if d["label"] is not None else "—"
            title = f"{d['by']}: {shown} · " + title
        ax.set_title(title, fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
        ax.margins(x=0.12)
        _plain_numbers(ax.xaxis, whole=True)
    if hidden:
        fig.suptitle(f"the first 12 groups; {hidden} more not shown", fontsize=9)
    fig.savefig(path, format="png")
    return fig


def group_png(doc: dict, path):
    """Bars of the sum (or the count) per group; with a period, stacked bars per period with
    a series per group (the 10 largest; the rest as 'other'). Returns the Figure written."""
    measure = "sum" if doc["sum"] else "count"
    rows = doc["rows"]

    def name(item) -> str:
        if item.get("hidden"):
            return HIDDEN
        return item["label"] if item["label"] is not None else "—"

    if not doc["period"]:
        shown = rows[:30]
        fig = _figure(9, 1.2 + 0.35 * max(len(shown), 1))
        ax = fig.subplots()
        ys = list(range(len(shown)))
        ax.barh(ys, [float(i[measure]) for i in shown], color="#3182bd")
        ax.set_yticks(ys, [name(i) for i in shown])
        ax.invert_yaxis()
        _plain_numbers(ax.xaxis, whole=measure == "count")
    else:
        totals: dict = {}
        for item in rows:
            totals[name(item)] = totals.get(name(item), 0) + float(item[measure])
        top = sorted(totals, key=lambda k: -totals[k])[:10]
        undated = [i for i in rows if i["period"] is None]
        if not any(float(i[measure]) for i in undated):
            rows = [i for i in rows if i["period"] is not None]  # nothing to draw for "no date"
        periods = sorted({i["period"] or "—" for i in rows})
        series: dict = {}
        for item in rows:
            label = name(item) if name(item) in top else "other"
            values = series.setdefault(label, dict.fromkeys(periods, 0.0))
            values[item["period"] or "—"] += float(item[measure])
        fig = _figure(max(7, 0.6 * len(periods) + 3), 5.5)
        ax = fig.subplots()
        bottom = [0.0] * len(periods)
        for label, values in series.items():
            heights = [values[p] for p in periods]
            ax.bar(periods, heights, bottom=bottom, label=label)
            bottom = [a + b for a, b in zip(bottom, heights, strict=True)]
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
        ax.tick_params(axis="x", labelrotation=45)
        _plain_numbers(ax.yaxis, whole=measure == "count")
    what = f"sum of {doc['sum']}" if doc["sum"] else "records"
    ax.set_title(f"{doc['entity']}: {what} by {doc['by']}" + (f" per {doc['period']}" if doc["period"] else ""))
    fig.savefig(path, format="png")
    return fig


# -- the facade ----------------------------------------------------------------------------------
class ReportsMixin(Host):
    """Reports and the board for the CRM facade (read-only: one read transaction each)."""

    def _access(self, ent: Entity):
        """The acting user's read filter for reports (None for the system user)."""
        from .access import row_clause

        return row_clause(self.storage, ent, self.actor)

    @overload
    def funnel(
        self,
        entity: str,
        pipeline: str | None = None,
        *,
        date_from: When | str | None = None,
        date_to: When | str | None = None,
        as_of: When | str | None = None,
        by: None = None,
    ) -> Funnel: ...

    @overload
    def funnel(
        self,
        entity: str,
        pipeline: str | None = None,
        *,
        date_from: When | str | None = None,
        date_to: When | str | None = None,
        as_of: When | str | None = None,
        by: str,
    ) -> list[FunnelGroup]: ...

    def funnel(
        self,
        entity: str,
        pipeline: str | None = None,
        *,
        date_from: When | str | None = None,
        date_to: When | str | None = None,
        as_of: When | str | None = None,
        by: str | None = None,
    ) -> Funnel | list[FunnelGroup]:
        """The funnel of a pipeline (see metacrm.runtime.reports for every number); with
        ``by``, a list of funnels, one per owner (or field value)."""
        self._ready()
        ent = self._entity(entity)
        with self._reading() as conn:
            return build_funnel(
                conn,
                self.storage,
                ent,
                pipeline,
                date_from=date_from,
                date_to=date_to,
                as_of=as_of,
                by=by,
                access=self._access(ent),
                actor=self.actor,
            )

    def report_group(
        self,
        entity: str,
        by: str,
        *,
        sum: str | None = None,  # noqa: A002
        period: str | None = None,
        date: str | None = None,
        date_from: When | str | None = None,
        date_to: When | str | None = None,
        pipeline: str | None = None,
    ) -> GroupReport:
        """Counts (and the sum of a money or number field) per value of ``by``, per period;
        with ``pipeline``, of that pipeline's records only."""
        self._ready()
        ent = self._entity(entity)
        with self._reading() as conn:
            return build_group(
                conn,
                self.storage,
                ent,
                by,
                sum=sum,
                period=period,
                date=date,
                date_from=date_from,
                date_to=date_to,
                access=self._access(ent),
                actor=self.actor,
                pipeline=pipeline,
            )

    def board(
        self,
        entity: str,
        pipeline: str | None = None,
        *,
        limit_per_stage: int | None = 20,
        order_by: str | None = None,
        where: str | None = None,
    ) -> Board:
        """The kanban of a pipeline: a column per stage with its count, amount and records."""
        from .access import path_access
        from .board import build_board

        self._ready()
        ent = self._entity(entity)
        with self._reading() as conn:
            return build_board(
                conn,
                self.storage,
                ent,
                pipeline,
                limit_per_stage=limit_per_stage,
                order_by=order_by,
                where=where,
                access=self._access(ent),
                path_access=path_access(self.storage, self.actor),
                me=self.user,
            )
