"""Load-time checks of an entity's ``rules:`` and of its fields' ``required_if`` and
``readonly_if`` (pure, no database): every expression parses and names only what the entity
has, reads no parameter (a rule holds for every user), and sits on a stored field.

Each check yields ``(type, message, path inside the entity, key)``; ``model/checks.py``
locates it in the YAML, so ``metacrm check`` prints ``FILE:LINE:COL``.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import ExpressionError
from .metamodel import Entity, Model

Issue = tuple[str, str, tuple, bool]


def _expression(model: Model, entity: Entity, text: str, what: str) -> str | None:
    """Why ``text`` is not a valid rule expression on ``entity`` (None when it is)."""
    from ..expr import compile_python

    try:
        predicate = compile_python(model, entity.name, text, what=what)
    except ExpressionError as exc:
        why = str(exc).removeprefix(f"{entity.name}: ").removeprefix(f"{what}: ")  # said once
        return f"{what}: {why}"
    if predicate.params:
        names = ", ".join(f":{p}" for p in sorted(predicate.params))
        return f"{what}: parameters ({names}) are not available in a rule; write the values"
    return None


def check_rules(model: Model, entity: Entity) -> Iterator[Issue]:
    seen: set[str] = set()
    for i, rule in enumerate(entity.rules):
        what = f"entity '{entity.name}': rule '{rule.title}'"
        if rule.name is not None:
            if rule.name in seen:
                yield (
                    "rule.duplicate",
                    f"{what}: the name is used by another rule of the entity",
                    ("rules", i, "name"),
                    False,
                )
            seen.add(rule.name)
        why = _expression(model, entity, rule.check, what)
        if why:
            yield ("rule.expression", why, ("rules", i, "check"), False)
    for f in entity.fields.values():
        for key in ("required_if", "readonly_if"):
            text = getattr(f, key)
            if text is None:
                continue
            what = f"field '{entity.name}.{f.name}': {key}"
            if f.derived:
                yield (
                    "rule.derived_field",
                    f"{what}: a computed field is never written; drop {key}",
                    (
                        "fields",
                        f.name,
                        key,
                    ),
                    False,
                )
                continue
            if key == "required_if" and f.required:
                yield (
                    "rule.always_required",
                    f"{what}: the field is required always; drop required_if or required",
                    (
                        "fields",
                        f.name,
                        key,
                    ),
                    False,
                )
            why = _expression(model, entity, text, what)
            if why:
                yield ("rule.expression", why, ("fields", f.name, key), False)


__all__ = ["check_rules"]
