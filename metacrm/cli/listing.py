"""Which columns a listing shows and how its values read: ``--columns`` (else the entity's
``list:``, else every column), links by their target's title in tables (ids in json and csv
unless ``--expand``), numbers at their type's scale.

Titles are read with one query per link column (per target entity of a polymorphic link), as
the acting user may see them (metacrm.runtime.titles): a hidden or missing target shows as
``(hidden)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .common import usage_error


def parse_columns(ent, text: str | None, extra: Sequence[str] = (), *, table: bool = True) -> list[str]:
    """The columns named by ``--columns a,b,client`` (``extra``: more names the command knows,
    e.g. inverse links on ``get``), else for a table the entity's ``list:``, else every column
    (json and csv hold every column unless told). An unknown name is a usage error (exit 2)
    naming the allowed ones."""
    if text is None:
        if table and not ent.list:  # a composite field (address, person_name) as one column
            return list(dict.fromkeys(_whole(ent, c) for c in ent.columns))
        return list((ent.list if table else None) or ent.columns)
    from ..model.suggest import did_you_mean, listing

    allowed = [*ent.columns, *ent.composites, *extra]
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        usage_error(f"--columns: name at least one column of {ent.name} ({listing(allowed)})")
    for name in names:
        if name not in allowed:
            hint = did_you_mean(name, allowed)
            usage_error(
                f"--columns: {ent.name} has no column '{name}'; columns: {listing(allowed, 40)}"
                + (f" ({hint})" if hint else "")
            )
    return list(dict.fromkeys(names))


def number_kinds(ent) -> dict:
    """column -> field, for the exact-number fields of an entity (money, currency, decimal, percent)."""
    return {f.name: f for f in ent.fields.values() if f.decimals is not None}


def human_durations(ent, rows: list[dict]) -> list[dict]:
    """Rows with their duration fields as a person reads them (1h 30m), for tables."""
    names = [f.name for f in ent.fields.values() if f.type == "duration"]
    if not names:
        return rows
    from ..dates import format_duration

    return [{k: format_duration(v) if k in names and isinstance(v, int) else v for k, v in row.items()} for row in rows]


def tidy(ent, record: dict) -> dict:
    """A record with its numbers at their type's scale (metacrm.model.field_types.at_scale)."""
    from ..model.field_types import at_scale

    kinds = number_kinds(ent)
    if not kinds:
        return record
    return {k: at_scale(kinds[k], v) if k in kinds else v for k, v in record.items()}


def link_titles(crm, ent, rows: Sequence[dict], columns: Sequence[str]) -> dict[str, dict]:
    """link column -> {target id (or (entity, id) for a polymorphic link): title shown}, for
    the link columns among ``columns``; one query per link column (per target entity of a
    polymorphic link). Targets the user may not read map to the hidden marker."""
    from ..runtime.titles import HIDDEN

    out: dict[str, dict] = {}
    for name in columns:
        link = ent.links.get(name)
        if link is None:
            continue
        if link.polymorphic:
            by_entity: dict[str, set] = {}
            for row in rows:
                value = row.get(name)
                for ref in (value or ()) if link.many else ([value] if value else ()):
                    by_entity.setdefault(ref["entity"], set()).add(ref["id"])
            shown: dict = {}
            for target, ids in by_entity.items():
                titles = crm.titles(target, ids)
                shown.update({(target, i): titles.get(i, HIDDEN) for i in ids})
            out[name] = shown
            continue
        ids: set = set()
        for row in rows:
            value = row.get(name)
            if link.many:
                ids.update(value or ())
            elif value is not None:
                ids.add(value)
        titles = crm.titles(link.target, ids) if ids else {}
        out[name] = {i: titles.get(i, HIDDEN) for i in ids}
    return out


def _title_of(link, titles: dict, value):
    if value is None:
        return None
    if link.polymorphic:
        return titles.get((value["entity"], value["id"]))
    return titles.get(value)


def with_titles(ent, rows: Sequence[dict], titles: dict[str, dict], *, references: bool = False) -> list[dict]:
    """Rows whose link values are their targets' titles (a many-link's joined by ", "), or
    with ``references`` (json ``--expand``) ``{"entity", "id", "title", "hidden"}`` dicts."""
    from ..runtime.titles import HIDDEN

    def one(link, value):
        title = _title_of(link, titles[link.name], value)
        if not references:
            return title
        target, target_id = (value["entity"], value["id"]) if link.polymorphic else (link.target, value)
        hidden = title == HIDDEN
        return {"entity": target, "id": target_id, "title": None if hidden else title, "hidden": hidden}

    out = []
    for row in rows:
        row = dict(row)
        for name in titles:
            link, value = ent.links[name], row.get(name)
            if link.many:
                items = [one(link, v) for v in value or ()]
                row[name] = items if references else ", ".join(items)
            else:
                row[name] = None if value is None else one(link, value)
        out.append(row)
    return out


def _whole(ent, column: str) -> str:
    """The composite field a part column belongs to (``address.city`` -> ``address``)."""
    f = ent.fields.get(column)
    return f.part_of if f is not None and f.part_of else column


def _cut_to(ent, rows: Sequence[dict], columns: Sequence[str]) -> list[dict]:
    """The rows cut to ``columns``, the numbers among them tidied (as :func:`tidy` does, for
    the shown columns only: a listing of many rows pays for no other); a composite column
    (``address``) is its value on one line."""
    whole = [c for c in columns if c in ent.composites]
    if whole:
        rows = [{**row, **{c: ent.composites[c].one_line(row) for c in whole}} for row in rows]
    kinds = {c: k for c, k in number_kinds(ent).items() if c in columns}
    if not kinds:
        return [{c: row.get(c) for c in columns} for row in rows]
    from ..model.field_types import at_scale

    return [{c: at_scale(kinds[c], row.get(c)) if c in kinds else row.get(c) for c in columns} for row in rows]


def shown_rows(crm, ent, rows: Sequence[dict], columns: Sequence[str], *, titles: bool) -> list[dict]:
    """The rows cut to ``columns``, numbers tidied, and with ``titles`` links by title."""
    rows = _cut_to(ent, rows, columns)
    if titles:
        rows = with_titles(ent, rows, link_titles(crm, ent, rows, columns))
    return rows


def expanded_rows(crm, ent, rows: Sequence[dict], columns: Sequence[str]) -> list[dict]:
    """json ``--expand``: the rows with each link as ``{"entity", "id", "title", "hidden"}``."""
    rows = _cut_to(ent, rows, columns)
    return with_titles(ent, rows, link_titles(crm, ent, rows, columns), references=True)
