"""Load-time checks of ``forms:`` (pure, no database): the entity a form creates, the fields a
sender may fill, the fixed values (against the field's type), the assignment rules (roles,
conditions over what the form fills or fixes) and the honeypot's name.

Each check yields ``(type, message, path inside the form, key)``; ``model/checks.py`` locates
it in the YAML. A rule's ``user`` is a login: users live in the database, so an unknown login
is found at run time (the record stays unassigned and the server logs it).
"""

from __future__ import annotations

from collections.abc import Iterator

from .metamodel import Entity, Form, Model
from .suggest import did_you_mean, listing

Issue = tuple[str, str, tuple, bool]


def _hinted(message: str, name: str, names) -> str:
    hint = did_you_mean(name, list(names))
    return message + (f" ({hint})" if hint else "")


def writable(entity: Entity) -> list[str]:
    """The fields a form may fill or fix: every stored field that is not computed."""
    return [f.name for f in entity.fields.values() if not f.derived]


def check_form(model: Model, form: Form) -> Iterator[Issue]:
    what = f"form '{form.name}'"
    entity = model.entities.get(form.entity)
    if entity is None:
        message = _hinted(f"{what}: unknown entity '{form.entity}'", form.entity, model.entities)
        yield ("form.entity_unknown", f"{message}; entities: {listing(model.entities)}", ("entity",), False)
        return
    allowed = writable(entity)
    for i, name in enumerate(form.fields):
        if name in allowed:
            continue
        why = "a computed field" if name in entity.fields else "not a field"
        message = _hinted(f"{what}: '{name}' is {why} of '{entity.name}'", name, allowed)
        yield ("form.field_unknown", f"{message}; a form may fill: {listing(allowed)}", ("fields", i), False)
    yield from _values(model, form, entity, allowed)
    if form.honeypot in form.fields:
        yield (
            "form.honeypot_clash",
            f"{what}: the honeypot '{form.honeypot}' is one of the form's fields; name another (honeypot: NAME)",
            ("honeypot",) if "honeypot" in _declared(model, form) else ("fields",),
            False,
        )
    given = set(form.fields) | set(form.values)
    for f in entity.fields.values():
        if f.required and f.default is None and not f.derived and f.name not in given:
            yield (
                "form.required_missing",
                f"{what}: '{entity.name}' requires '{f.name}', which the form neither lists in fields nor fixes "
                "in values",
                ("fields",),
                False,
            )
    yield from _rules(model, form, entity)


def _declared(model: Model, form: Form) -> dict:
    import json

    doc = json.loads(model.canonical) if model.canonical else {}
    return doc.get("forms", {}).get(form.name, {})


def _values(model: Model, form: Form, entity: Entity, allowed: list[str]) -> Iterator[Issue]:
    from ..validation.values import Invalid, field_coercer

    what = f"form '{form.name}'"
    for name, value in form.values.items():
        where = ("values", name)
        if name not in allowed:
            message = _hinted(f"{what}: values: '{name}' is not a field of '{entity.name}'", name, allowed)
            yield ("form.value_unknown", f"{message}; fields: {listing(allowed)}", where, True)
            continue
        if name in form.fields:
            yield (
                "form.value_listed",
                f"{what}: '{name}' is both a field the sender fills and a fixed value; keep one",
                where,
                True,
            )
            continue
        try:
            field_coercer(entity.fields[name], region=model.region, zone=model.timezone)(value)
        except Invalid as exc:
            yield ("form.value_invalid", f"{what}: values: {name}: {exc}", where, False)


def _rules(model: Model, form: Form, entity: Entity) -> Iterator[Issue]:
    from ..errors import ExpressionError
    from ..expr import compile_python

    what = f"form '{form.name}'"
    single = isinstance(_declared(model, form).get("assign"), dict)
    if form.assign and not entity.owner:
        yield (
            "form.assign_no_owner",
            f"{what}: '{entity.name}' has no owner (declare owner: true) to assign",
            ("assign",),
            False,
        )
        return
    known = [*form.fields, *form.values]
    for i, rule in enumerate(form.assign):
        at = ("assign",) if single else ("assign", i)
        if rule.round_robin is not None and rule.round_robin not in model.roles:
            message = _hinted(f"{what}: assign: unknown role '{rule.round_robin}'", rule.round_robin, model.roles)
            yield ("form.role_unknown", f"{message}; roles: {listing(model.roles)}", (*at, "round_robin"), False)
        if rule.condition is None:
            continue
        try:
            predicate = compile_python(model, entity.name, rule.condition, what=f"{what}: assign: if")
        except ExpressionError as exc:
            text = str(exc)
            yield ("form.if_invalid", text if text.startswith(what) else f"{what}: assign: if: {text}", (*at, "if"), False)
            continue
        outside = sorted(p for p in predicate.paths if p not in known)
        if outside:
            yield (
                "form.if_invalid",
                f"{what}: assign: if: '{outside[0]}' is not something the form fills or fixes "
                f"(fields and values: {listing(known)})",
                (*at, "if"),
                False,
            )


__all__ = ["check_form", "writable"]
