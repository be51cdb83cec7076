"""CSV of a many-link's rows with their fields (docs/csv.md#link-rows).

``metacrm export deal --link products`` writes one line per linked pair::

    deal,product,qty,price
    1,4,3,900.50

the record's id, the target's id, then the link's fields (empty: no value). ``metacrm import
deal FILE.csv --link products`` reads the same format: each line links the record to the
target, with the fields given (an empty cell or a missing column: the field's default for a
new pair, the stored value for a pair already linked), exactly as ``crm.link(entity, id,
link, target, values={...})`` does, in one transaction: every line or none. A bad line is
refused naming the file, its line and the field (``pairs.csv:3: deal.products.qty: '0' is
less than the minimum 1``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

from ..errors import NotFound, ValidationError
from ..model.metamodel import Entity, Link
from .csv_cells import neutralise
from .csv_cells import writer as csv_writer

PAGE = 1000


def _link(crm, entity: str, link: str) -> tuple[Entity, Link]:
    ent = crm.model.entity(entity)
    found = ent.links.get(link)
    if found is None or not found.many:
        many = [name for name, candidate in ent.links.items() if candidate.many]
        raise ValidationError(
            f"{ent.name}: '{link}' is not a many-link; many-links: {', '.join(many) or 'none'}",
            entity=ent.name,
        )
    return ent, found


def columns(ent: Entity, link: Link) -> list[str]:
    """The header: the record's entity, the target's entity, the link's fields."""
    target = link.target if link.target != ent.name else f"{link.target}_target"
    return [ent.name, target, *link.fields]


def export_link_rows(
    crm, entity: str, link: str, file, *, where: str | None = None, params: Mapping | None = None
) -> int:
    """Write the rows of ``entity``'s many-link ``link`` (of the records ``where`` selects that
    the acting user may export) as CSV to a path or a text (or binary) file; returns the number
    of rows written. Pages of records by id: memory stays bounded."""
    from .csv_io import _number, _plain

    ent, found = _link(crm, entity, link)
    formats = [
        _number(f.type) if f.type in ("integer", "money", "decimal", "percent") else _plain
        for f in found.fields.values()
    ]
    numeric = [f.type in ("integer", "money", "decimal", "percent") for f in found.fields.values()]
    wrapper = None
    if isinstance(file, str | os.PathLike):
        out = open(file, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
    elif isinstance(file, io.RawIOBase | io.BufferedIOBase):
        out = wrapper = io.TextIOWrapper(file, encoding="utf-8", newline="")
    else:
        out = file
    count, after = 0, 0
    key = f"{link}.link"
    condition = "id > :metacrm_after" + (f" and ({where})" if where else "")
    try:
        writer = csv_writer(out)
        header = False
        while True:
            page = crm.find(
                ent.name,
                condition,
                {**(params or {}), "metacrm_after": after},
                order_by="id",
                limit=PAGE,
                action="export",
            )
            if not header:  # a bad filter fails before the header is written
                writer.writerow(columns(ent, found))
                header = True
            for record in page:
                pairs = record.get(key) if found.fields else [{"id": t} for t in record[link]]
                for pair in pairs:
                    cells = [str(record["id"]), str(pair["id"])]
                    cells += [
                        neutralise(fmt(pair.get(name)), numeric=num)
                        for name, fmt, num in zip(found.fields, formats, numeric, strict=True)
                    ]
                    writer.writerow(cells)
                    count += 1
            if len(page) < PAGE:
                return count
            after = page[-1]["id"]
    finally:
        if wrapper is not None:
            wrapper.flush()
            wrapper.detach()
        elif out is not file:
            out.close()


def import_link_rows(crm, entity: str, link: str, source) -> int:
    """Link records to targets with the fields of each line of a CSV file (a path or a file
    object); returns the number of lines applied. All lines or none."""
    from .csv_io import read_csv

    ent, found = _link(crm, entity, link)
    name, header, rows = read_csv(source)
    expected = columns(ent, found)
    lowered = [h.strip().lower() for h in header]
    missing = [c for c in expected[:2] if c not in lowered]
    unknown = [h for h in header if h.strip().lower() not in expected]
    if missing or unknown:
        what = f"missing column {', '.join(missing)}" if missing else f"unknown column {', '.join(unknown)}"
        raise ValidationError(
            f"{name}:1: {what}; the columns of {ent.name}.{link} rows are {', '.join(expected)} "
            f"(the record's id, the target's id, then the link's fields)",
            entity=ent.name,
        )
    at = {h: i for i, h in enumerate(lowered)}
    fields = [f for f in found.fields if f in at]
    with crm.transaction():
        for line, cells in rows:
            cell = _cells(cells)
            values: dict[str, Any] = {f: cell(at[f]) for f in fields if cell(at[f]) != ""}
            try:
                crm.link(ent.name, cell(at[expected[0]]), link, cell(at[expected[1]]), values=values or None)
            except ValidationError as exc:  # the file's line first, then the record and field
                raise ValidationError(f"{name}:{line}: {exc}", exc.issues) from exc
            except NotFound as exc:
                raise NotFound(f"{name}:{line}: {exc}", entity=exc.entity, record_id=exc.record_id) from exc
    return len(rows)


def _cells(cells: list[str]):
    def cell(i: int) -> str:
        return cells[i].strip() if i < len(cells) else ""

    return cell


__all__ = ["columns", "export_link_rows", "import_link_rows"]
