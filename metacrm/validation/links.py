"""Coercers for links, the record's owner and its pipeline.

Only the shape is checked here (an id is a positive whole number, a polymorphic link names one
of its targets); whether the target record exists is checked by the database layer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal

from ..model.metamodel import Entity, Link
from .values import Coercer, Invalid, show, type_name

_ID = re.compile(r"\s*[0-9]+\s*")
ID_LIMIT = 2**63


def record_id(value: object, what: str) -> int:
    """A positive record id from an int or a string of digits; ``what`` names the target."""
    if isinstance(value, bool):
        raise Invalid(f"{show(value)} is not a record id; give the id of {what} (a whole number)")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and _ID.fullmatch(value):
        result = int(value)
    elif isinstance(value, float | Decimal) and _integral(value):
        result = int(value)
    else:
        raise Invalid(f"{show(value)} is not a record id; give the id of {what} (a whole number)")
    if not 0 < result < ID_LIMIT:
        raise Invalid(f"{show(value)} is not a record id; ids are positive whole numbers")
    return result


def _integral(value: float | Decimal) -> bool:
    finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
    return finite and abs(value) < ID_LIMIT and value % 1 == 0


def _a(entity: str) -> str:
    return f"a{'n' if entity[:1] in 'aeiou' else ''} {entity} record"


def single_link_coercer(link: Link) -> Coercer:
    what = _a(link.target)

    def coerce(value):
        if value is None or value == "":
            return None
        if isinstance(value, str) and value.strip() == "":
            return None
        return record_id(value, what)

    return coerce


class LinkFieldInvalid(Invalid):
    """A bad value of a link's field: ``field`` names it (the issue reads ``deal.products.qty``)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


class LinkRows(list):
    """A many-link value: the target ids, in order, and ``values``: for a link with fields,
    the field values given for some of the targets (``{4: {"qty": 3}}``), coerced."""

    __slots__ = ("values",)

    def __init__(self, ids=(), values: Mapping | None = None):
        super().__init__(ids)
        self.values = dict(values or {})


def link_values_coercer(link: Link, *, region: str | None = None, zone: str | None = None):
    """``values`` of one linked pair -> the coerced values given (only those keys). Raises
    LinkFieldInvalid naming the field, or Invalid for an unknown key."""
    from .values import field_coercer

    coercers = {f.name: field_coercer(f, region=region, zone=zone) for f in link.fields.values()}
    names = ", ".join(coercers) or "none"

    def coerce(values: Mapping, skip: str | None = None) -> dict:
        if type(values) is not dict and not isinstance(values, Mapping):
            raise Invalid(f"{show(values)} are not the values of a link ({type_name(values)}); give field=value pairs")
        out = {}
        for key, value in values.items():
            if key == skip:  # the target's id of a many-link item
                continue
            run = coercers.get(key)
            if run is None:
                hint = _did_you_mean(key, coercers)
                raise Invalid(
                    f"unknown field {show(key)} of link {link.name}"
                    + (f" ({hint})" if hint else "")
                    + f"; fields: {names}"
                )
            try:
                out[key] = run(value)
            except Invalid as exc:
                raise LinkFieldInvalid(str(exc), key) from None
            except Exception as exc:  # an odd object a coercer did not foresee
                raise LinkFieldInvalid(f"{show(value)} cannot be read ({type_name(value)}): {exc}", key) from None
        return out

    return coerce


def _did_you_mean(name, names) -> str | None:
    from ..model.suggest import did_you_mean

    return did_you_mean(str(name), list(names))


def many_link_coercer(link: Link, *, region: str | None = None, zone: str | None = None) -> Coercer:
    what = _a(link.target)
    values_of = link_values_coercer(link, region=region, zone=zone) if link.fields else None

    def coerce(value):
        if value is None or value == "":
            return LinkRows() if values_of else []
        if isinstance(value, str):
            items = [part for part in value.split(",") if part.strip()]
        elif isinstance(value, list | tuple | set | frozenset):
            items = list(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [value]
        else:
            raise Invalid(f"{show(value)} is not a list of record ids ({type_name(value)}); give ids of {what}s")
        ids: dict[int, None] = {}
        given: dict[int, dict] = {}
        bad = []
        for item in items:
            if values_of is not None and (type(item) is dict or isinstance(item, Mapping)) and "id" in item:
                target = record_id(item["id"], what)  # a bad id is refused by itself
                ids[target] = None
                given[target] = values_of(item, "id")
                continue
            try:
                ids[record_id(item, what)] = None
            except Invalid:
                bad.append(item)
        if bad:
            shape = " or {'id': 4, 'field': value}" if values_of else ""
            raise Invalid(
                f"{', '.join(show(b) for b in bad)} {'is not a record id' if len(bad) == 1 else 'are not record ids'}; "
                f"give ids of {what}s (whole numbers){shape}, as a list or comma-separated"
            )
        return LinkRows(ids, given) if values_of else list(ids)

    return coerce


def polymorphic_link_coercer(link: Link) -> Coercer:
    targets = link.targets
    names = ", ".join(targets)
    shape = f"give {{'entity': '{targets[0]}', 'id': 5}} or '{targets[0]}:5'; targets: {names}"

    def coerce(value):
        if value is None or value == "":
            return None
        if isinstance(value, str):
            if value.strip() == "":
                return None
            entity, sep, ident = value.partition(":")
            if not sep:
                raise Invalid(f"{show(value)} does not name a record; {shape}")
            entity = entity.strip()
        elif isinstance(value, Mapping):
            if set(value) != {"entity", "id"}:
                raise Invalid(f"{show(value)} does not name a record; {shape}")
            entity, ident = value["entity"], value["id"]
        elif isinstance(value, tuple | list) and len(value) == 2:
            entity, ident = value
        else:
            raise Invalid(f"{show(value)} does not name a record ({type_name(value)}); {shape}")
        if entity not in targets:
            raise Invalid(f"{show(value)} links to {show(entity)}, which this link cannot reach; targets: {names}")
        return {"entity": entity, "id": record_id(ident, _a(entity))}

    return coerce


def polymorphic_many_coercer(link: Link) -> Coercer:
    """A many-link to several entities: a list of ``{"entity", "id"}`` (or ``deal:5`` texts,
    comma-separated in one text), duplicates dropped, in the order given."""
    one = polymorphic_link_coercer(link)

    def coerce(value):
        if value is None or value == "":
            return []
        if isinstance(value, str):
            items = [part for part in value.split(",") if part.strip()]
        elif isinstance(value, Mapping):
            items = [value]
        elif isinstance(value, list | tuple | set | frozenset):
            items = list(value)
        else:
            raise Invalid(f"{show(value)} is not a list of records ({type_name(value)}); give deal:5 items")
        out: dict[tuple, dict] = {}
        for item in items:
            ref = one(item)
            if ref is not None:
                out.setdefault((ref["entity"], ref["id"]), ref)
        return list(out.values())

    return coerce


def link_coercer(link: Link, *, region: str | None = None, zone: str | None = None) -> Coercer:
    if link.polymorphic and link.many:
        return polymorphic_many_coercer(link)
    if link.polymorphic:
        return polymorphic_link_coercer(link)
    if link.many:
        return many_link_coercer(link, region=region, zone=zone)
    return single_link_coercer(link)


def owner_coercer(value):
    """A user login; None when not given (the runtime then uses the acting user)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"{show(value)} is not a user login ({type_name(value)})")
    login = value.strip()
    return login or None


def pipeline_coercer(entity: Entity) -> Coercer:
    pipelines = tuple(entity.pipelines)
    names = ", ".join(pipelines)

    def coerce(value):
        if value is None or value == "":
            return None
        if isinstance(value, str) and value.strip() in entity.pipelines:
            return value.strip()
        raise Invalid(f"{show(value)} is not a pipeline of {entity.name}; pipelines: {names}")

    return coerce


__all__ = [
    "LinkFieldInvalid",
    "LinkRows",
    "link_coercer",
    "link_values_coercer",
    "owner_coercer",
    "pipeline_coercer",
    "record_id",
]
