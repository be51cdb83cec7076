"""The JSON Schema of the model format, and its errors turned into located problems.

``schemas/metacrm.schema.json`` is the one reference for the syntax; the wheel carries a copy
inside the package (``metacrm/schemas/``), a source checkout reads the top-level file.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..errors import Problem
from .suggest import did_you_mean, listing
from .yaml_source import Source

_HERE = Path(__file__).resolve().parent.parent
_CANDIDATES = (
    _HERE / "schemas" / "metacrm.schema.json",  # installed wheel
    _HERE.parent / "schemas" / "metacrm.schema.json",  # source checkout / editable install
)


def schema_path() -> Path:
    for candidate in _CANDIDATES:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("metacrm.schema.json is missing from this installation")  # pragma: no cover


def schema_text() -> str:
    return schema_path().read_text(encoding="utf-8")


@functools.cache
def load_schema() -> dict:
    return json.loads(schema_text())


@functools.cache
def _validator(fragment: bool):
    from jsonschema import Draft202012Validator

    schema = dict(load_schema())
    if fragment:  # an included file need not repeat `metacrm: 1`
        schema.pop("required", None)
    return Draft202012Validator(schema)


def dotted(path) -> str:
    return ".".join(str(p) for p in path) or "model"


def schema_problems(source: Source, *, fragment: bool = False) -> list[Problem]:
    """Validate one file's data against the schema; one located problem per violation."""
    from jsonschema.exceptions import best_match

    data = source.data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        line, col = source.values.get((), (1, 1))
        return [
            Problem(
                "schema.type", "a model must be a mapping of keys (metacrm:, entities:, ...)", source.file, line, col
            )
        ]
    problems: list[Problem] = []
    seen: set = set()
    for error in _validator(fragment).iter_errors(data):
        leaf = best_match([error]) if error.context else error
        for problem in _translate(leaf, source):
            key = (problem.line, problem.col, problem.message)
            if key not in seen:
                seen.add(key)
                problems.append(problem)
    problems.sort(key=lambda p: (p.line, p.col))
    return problems


def _at(source: Source, path: tuple, *, key: bool = False) -> tuple[int, int]:
    """Location of a path's key (or value), falling back to the nearest ancestor."""
    path = tuple(path)
    while True:
        if key and path in source.keys:
            return source.keys[path]
        if not key and path in source.values:
            return source.values[path]
        if path in source.keys:
            return source.keys[path]
        if not path:
            return (1, 1)
        path = path[:-1]


def _what(value) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "nothing (null)"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return f"'{value}'"


_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "empty",
}


def _types(t) -> str:
    if isinstance(t, list):
        return " or ".join(_TYPE_WORDS.get(x, x) for x in t)
    return _TYPE_WORDS.get(t, str(t))


def _translate(error, source: Source) -> list[Problem]:
    path = tuple(error.absolute_path)
    where = dotted(path)
    validator = error.validator
    file = source.file

    def problem(type_, message, at_path=path, *, key=False, hint=None):
        line, col = _at(source, at_path, key=key)
        return Problem(type_, message, file, line, col, loc=tuple(at_path), hint=hint)

    if (
        isinstance(error.instance, bool)
        and validator in ("type", "oneOf", "anyOf")
        and '"string"' in json.dumps(error.schema)
    ):
        return [
            problem(
                "schema.boolean_not_text",
                f"{where}: YAML read this unquoted value as the boolean {str(error.instance).lower()}, "
                "but text is expected; quote it (yes, no, on, off, true and false are booleans in YAML)",
            )
        ]
    if validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed]
        return [
            problem(
                "schema.unknown_key",
                f"{where}: unknown key '{k}'; allowed: {listing(allowed)}",
                (*path, k),
                key=True,
                hint=did_you_mean(k, allowed),
            )
            for k in extras
        ]
    if validator == "required":
        missing = [k for k in error.validator_value if isinstance(error.instance, dict) and k not in error.instance]
        name = missing[0] if missing else error.validator_value[0]
        return [problem("schema.required", f"{where}: missing required key '{name}'", key=True)]
    if validator == "enum":
        allowed = [str(v) for v in error.validator_value]
        if len(path) >= 4 and path[0] == "entities" and path[2] == "fields" and path[-1] == "type":
            return [
                problem(
                    "field.unknown_type",
                    f"entity '{path[1]}', field '{path[3]}': unknown field type {_what(error.instance)}; "
                    f"types: {listing(allowed)}",
                    hint=did_you_mean(error.instance, allowed),
                )
            ]
        return [
            problem(
                "schema.enum",
                f"{where}: {_what(error.instance)} is not allowed; allowed: {listing(allowed)}",
                hint=did_you_mean(error.instance, allowed),
            )
        ]
    if validator == "const":
        return [
            problem(
                "schema.const", f"{where}: must be {json.dumps(error.validator_value)}, not {_what(error.instance)}"
            )
        ]
    if validator == "type":
        return [
            problem("schema.type", f"{where}: expected {_types(error.validator_value)}, got {_what(error.instance)}")
        ]
    if (
        validator in ("pattern", "maxLength")
        and error.schema.get("pattern") == load_schema()["$defs"]["identifier"]["pattern"]
    ):
        return [_bad_identifier(error.instance, path, problem, validator)]
    if validator == "propertyNames" or (error.relative_schema_path and "propertyNames" in error.relative_schema_path):
        name = error.instance
        return [_bad_identifier(name, (*path, name) if isinstance(name, str) else path, problem, validator, key=True)]
    if validator == "pattern" and "wdhms" in error.validator_value:
        return [
            problem(
                "schema.duration", f"{where}: {_what(error.instance)} is not a duration; write e.g. 4h, 2d, 1d 12h, 30m"
            )
        ]
    if validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bound = {"minimum": "at least", "maximum": "at most"}.get(validator, validator)
        return [problem("schema.range", f"{where}: {_what(error.instance)} must be {bound} {error.validator_value}")]
    if validator in ("minItems", "minProperties", "minLength"):
        return [problem("schema.empty", f"{where}: must not be empty")]
    if validator == "uniqueItems":
        return [problem("schema.duplicate", f"{where}: lists the same name twice")]
    if validator in ("oneOf", "anyOf"):
        # a plain value where one branch lists the allowed values (a scope, or {assigned: [...]}):
        # say which values are allowed rather than that the shape is wrong
        enums = [e for e in error.context if e.validator == "enum"]
        if enums and not isinstance(error.instance, dict | list):
            return _translate(enums[0], source)
        return [
            problem(
                "schema.shape",
                f"{where}: {_what(error.instance)} has not the expected shape: {error.schema.get('description', '')}".rstrip(
                    ": "
                ),
            )
        ]
    return [problem(f"schema.{validator}", f"{where}: {error.message}")]


def _bad_identifier(name, path, problem, validator, *, key=False):
    longest = load_schema()["$defs"]["identifier"]["maxLength"]
    if validator == "maxLength" or (isinstance(name, str) and len(name) > longest and name.isascii()):
        return problem("name.too_long", f"name '{name}' is longer than {longest} characters", path, key=key)
    return problem(
        "name.invalid",
        f"{_what(name)} is not a valid name: use ASCII snake_case "
        "(a lower-case letter, then lower-case letters, digits, single underscores)",
        path,
        key=key,
    )


__all__ = ["dotted", "load_schema", "schema_path", "schema_problems", "schema_text"]
