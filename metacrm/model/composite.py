"""Fields made of parts: ``address`` and ``person_name`` (docs/types.md).

A composite field is declared once and built as one ordinary field per part, named
``<field>.<part>`` (``address.city``, ``name.last``): each is a real column of that name, so
every path that knows fields (storage, migrations, filters, search, sorting, CSV, the API,
forms) handles the parts without knowing about composites. A record carries the parts as keys
of those names (as ``<link>.link`` carries a link's values); a write may also give the field as
a mapping of its parts (``{"address": {"city": "Paris"}}``), which validation spreads onto the
parts. ``Composite`` keeps the grouping, for showing a value as one line.

``address``
    ``street`` (text), ``city``, ``region``, ``postcode`` (strings), ``country`` (an ISO 3166-1
    alpha-2 code, type ``country``). ``required: true`` requires the city.
``person_name``
    ``full`` (derived: the parts joined by spaces, a stored formula field usable in search,
    sorting and as the title), ``first``, ``middle``, ``last``. ``required: true`` requires the
    last name.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPOSITE_TYPES = ("address", "person_name")


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    type: str
    max_length: int | None = None
    caption: str = ""


PARTS: dict[str, tuple[Part, ...]] = {
    "address": (
        Part("street", "string", 500, "street"),
        Part("city", "string", 200, "city"),
        Part("region", "string", 200, "region"),
        Part("postcode", "string", 20, "postcode"),
        Part("country", "country", None, "country"),
    ),
    "person_name": (
        Part("full", "string", None, "full name"),
        Part("first", "string", 100, "first name"),
        Part("middle", "string", 100, "middle name"),
        Part("last", "string", 100, "last name"),
    ),
}
REQUIRED_PART = {"address": "city", "person_name": "last"}
# what the field stands for where one value is wanted (a title, search, a sort): its parts
SEARCHED_PARTS = {"address": ("street", "city", "region", "postcode"), "person_name": ("full",)}
SORT_PART = {"address": "city", "person_name": "full"}


def part_name(field: str, part: str) -> str:
    return f"{field}.{part}"


def full_name_formula(field: str) -> str:
    """The formula of a person_name's ``full`` part: the parts present, joined by one space;
    null when there is none."""
    first, middle, last = (part_name(field, p) for p in ("first", "middle", "last"))
    joined = f"trim(coalesce({first}, '') || ' ' || coalesce({middle} || ' ', '') || coalesce({last}, ''))"
    return f"if({first} is null and {middle} is null and {last} is null, null, {joined})"


def full_name(values, field: str) -> str | None:
    """A person_name's full name from its parts in ``values``, as its formula computes it (for
    a record not yet stored: duplicate rules compare it before the formula runs)."""
    parts = [values.get(part_name(field, p)) for p in ("first", "middle", "last")]
    return " ".join(str(p) for p in parts if p not in (None, "")).strip() or None


@dataclass(frozen=True, slots=True)
class Composite:
    """A declared composite field: its type, caption and part fields in order."""

    name: str
    type: str
    label: str | None
    parts: tuple[tuple[str, str], ...]  # (part, field name)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f for _, f in self.parts)

    def one_line(self, record) -> str | None:
        """The value as one line: ``Tverskaya 1, Moscow, 125009, RU``; None when empty."""
        if self.type == "person_name":
            value = record.get(part_name(self.name, "full"))
            return value or None
        shown = [str(record.get(f)) for p, f in self.parts if record.get(f) not in (None, "")]
        return ", ".join(shown) or None


__all__ = [
    "COMPOSITE_TYPES",
    "PARTS",
    "REQUIRED_PART",
    "SEARCHED_PARTS",
    "SORT_PART",
    "Composite",
    "Part",
    "full_name",
    "full_name_formula",
    "part_name",
]
