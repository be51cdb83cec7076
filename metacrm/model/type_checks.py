"""Load-time checks of the exact-number, currency, duration and option keys of a field:
``scale``/``precision`` fit the columns of both dialects, a currency field names exactly one of
``currency`` (an ISO 4217 code) and ``currency_field`` (a choice field of the entity whose
options are ISO 4217 codes), option colors are CSS colors.

Each check yields ``(type, message, path inside the field, key)``; ``model/checks.py`` locates
it in the YAML.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal, InvalidOperation

from .field_types import MAX_PRECISION, currency_precision
from .metamodel import Entity, Field
from .suggest import did_you_mean, listing

Issue = tuple[str, str, tuple, bool]


def field_type_problems(entity: Entity, f: Field, decl: dict) -> Iterator[Issue]:
    where = f"field '{entity.name}.{f.name}'"
    yield from _shape(where, f, decl)
    yield from _defaults(where, f, decl)
    if f.type == "currency":
        yield from _currency(where, entity, f, decl)
    yield from _options(where, f, decl)


def _shape(where: str, f: Field, decl: dict) -> Iterator[Issue]:
    scale, precision = decl.get("scale"), decl.get("precision")
    if f.scale is None or f.type not in ("decimal", "percent"):
        scale = None
    if not isinstance(precision, int) or isinstance(precision, bool):
        precision = None
    if isinstance(scale, int) and precision is not None and scale > precision:
        yield (
            "field.scale_invalid",
            f"{where}: scale {scale} is more than precision {precision} (the digits in all, decimals included)",
            ("scale",),
            False,
        )
        return
    if f.type == "percent" and (f.whole_digits or 0) < 3 and (precision is not None or scale is not None):
        yield (
            "field.scale_invalid",
            f"{where}: precision {precision or MAX_PRECISION} with scale {f.decimals} leaves "
            f"{f.whole_digits} digits before the point; a percent needs 3 (100)",
            ("precision" if "precision" in decl else "scale",),
            False,
        )


def _defaults(where: str, f: Field, decl: dict) -> Iterator[Issue]:
    """A default or fill of an exact number fits its scale (1.5 is no yen amount); a duration's
    reads as one."""
    if f.decimals is None or f.derived:
        return
    from ..validation.values import Invalid, field_coercer

    coerce = field_coercer(f)
    for key in ("default", "fill"):
        value = decl.get(key)
        if not isinstance(value, int | float | str) or isinstance(value, bool):
            continue  # not a number at all: the default check says so (field.default_invalid)
        try:
            Decimal(str(value))
        except InvalidOperation:
            continue
        try:
            coerce(value)
        except Invalid as exc:
            yield ("field.default_invalid", f"{where}: {key} {exc}", (key,), False)


def _currency(where: str, entity: Entity, f: Field, decl: dict) -> Iterator[Issue]:
    has_code, has_field = "currency" in decl, "currency_field" in decl
    if has_code == has_field:
        yield (
            "field.currency_missing" if not has_code else "field.currency_ambiguous",
            f"{where}: a currency field needs exactly one of 'currency' (an ISO 4217 code such as RUB, "
            "used by every record) and 'currency_field' (the choice field of the record naming its currency)",
            (),
            True,
        )
        return
    if has_code:
        if f.currency is None or currency_precision(f.currency) is None:
            yield (
                "field.currency_unknown",
                f"{where}: currency {decl['currency']!r} is not an ISO 4217 currency code (such as RUB, USD, JPY)",
                ("currency",),
                False,
            )
        return
    name = f.currency_field
    source = entity.fields.get(name or "")
    if source is None or source.type != "choice":
        choices = [x.name for x in entity.fields.values() if x.type == "choice"]
        hint = did_you_mean(name or "", choices)
        yield (
            "field.currency_field_invalid",
            f"{where}: currency_field {name!r} is not a choice field of {entity.name} "
            f"(choice fields: {listing(choices)})" + (f" ({hint})" if hint else ""),
            ("currency_field",),
            False,
        )
        return
    bad = [code for code in source.option_values if currency_precision(code) is None]
    if bad:
        yield (
            "field.currency_unknown",
            f"{where}: currency_field '{name}' has options that are not ISO 4217 currency codes: "
            f"{listing(bad)} (options must be codes such as RUB, USD, JPY)",
            ("currency_field",),
            False,
        )


def _options(where: str, f: Field, decl: dict) -> Iterator[Issue]:
    from .colors import parse_css_color

    for i, option in enumerate(f.options):
        if option.color is None:
            continue
        why = parse_css_color(option.color)
        if isinstance(why, str):
            yield (
                "field.option_color_invalid",
                f"{where}: option '{option.value}': color {option.color!r} {why}",
                ("options", i, "color"),
                False,
            )


__all__ = ["field_type_problems"]
