"""The JSON Schemas of the OpenAPI document (metacrm/web/openapi.py): per entity how the API
writes a record (read, a list's item, a page) and reads one (create, patch), from the model's
field types; the shared documents (Problem, LinkRef, Board, Funnel...); the problem responses.
"""

from __future__ import annotations

import re
from typing import Any

from ..model.bounds import RANGES, field_range
from ..model.metamodel import Entity, Field, Link
from ..validation.values import MAX_VALUES
from .problems import _TITLES, PROBLEM

INT64_MAX = 2**63 - 1
REF = "#/components/schemas/"

_WHEN = {
    400: "The request cannot be read: a bad parameter, expression (with its `position`), cursor or JSON body.",
    401: "No token, or an unknown, revoked or expired one (`WWW-Authenticate: Bearer`).",
    403: "The acting user's role lacks this action.",
    404: "No such record, or one the acting user may not read (answered alike), entity or path.",
    409: "A refused move (`allowed`: each move and what it lacks), a link or delete the model's rules "
    "refuse, or a record changed meanwhile.",
    412: "`If-Match` names a version the record is no longer at: nothing was written.",
    413: "The body is over the server's limit (`--max-body`).",
    415: "The body's content type is not one this operation reads.",
    422: "Bad values: `errors` lists every bad field of every row (`loc`: row index, field).",
    429: "Too many submissions of a public form from one address (`Retry-After`).",
    503: "The database holds another model version (run `metacrm migrate`), is unreachable, or stayed "
    "locked past the busy timeout (`Retry-After`).",
}


# -- values --------------------------------------------------------------------------------------
def _nullable(schema: dict) -> dict:
    """The schema also allowing null (a type array; ``enum`` gains null)."""
    out = dict(schema)
    kind = out.get("type")
    if kind is None:
        return out  # any value, null included
    types = kind if isinstance(kind, list) else [kind]
    if "null" not in types:
        out["type"] = [*types, "null"]
    if "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    return out


def _decimal_pattern(scale: int, *, signed: bool, whole: int | None = None) -> str:
    whole = 18 - scale if whole is None else whole
    if scale == 0:
        return rf"^{'-?' if signed else ''}[0-9]{{1,{whole}}}$"
    return rf"^{'-?' if signed else ''}[0-9]{{1,{whole}}}(\.[0-9]{{1,{scale}}})?$"


def _value_schema(f: Field, *, writing: bool) -> dict:
    """The JSON Schema of a field's value (without null), as the API reads or writes it."""
    kind = f.type
    schema: dict[str, Any]
    if kind in ("string", "text", "phone", "email", "url"):
        schema = {"type": "string"}
        schema.update({"email": {"format": "email"}, "url": {"format": "uri"}}.get(kind, {}))
        if f.max_length:
            schema["maxLength"] = f.max_length
        if f.pattern and _portable(f.pattern):
            schema["pattern"] = f.pattern
        elif f.required and writing:
            schema["pattern"] = r"\S"  # blank text is no value
        if f.required and writing:
            schema["minLength"] = 1
    elif kind == "integer":
        low, high = RANGES["integer"]
        schema = {"type": "integer", "format": "int64"}
        schema["minimum"] = f.min if f.min is not None else low
        schema["maximum"] = f.max if f.max is not None else high
    elif kind == "duration":  # whole seconds out; in: seconds, or text such as 1h30m or PT1H30M
        seconds = {"type": "integer", "format": "int64", "minimum": 0, "description": "seconds"}
        if writing:
            text = {"type": "string", "description": "a duration: 1h30m, 2d 4h, PT1H30M, P2D"}
            schema = {"anyOf": [seconds, text]}
        else:
            schema = seconds
    elif kind in ("decimal", "money", "percent", "currency"):
        scale, whole = f.decimals, f.whole_digits  # a currency's: the most its records may have
        signed = f.min is None or f.min < 0
        text = {"type": "string", "format": "decimal", "pattern": _decimal_pattern(scale, signed=signed, whole=whole)}
        if not writing:  # exact: the API writes decimals as strings
            schema = {"type": "string", "format": "decimal"}
            if kind == "currency":
                schema["description"] = (
                    f"an amount in {f.currency}" if f.currency else f"an amount in the currency named by {f.currency_field}"
                )
        else:  # a JSON number is read exactly as written, a string of digits too
            low, high, _ = field_range(f)
            number = {"type": "number"}
            number["minimum"] = f.min if f.min is not None else float(low)
            number["maximum"] = f.max if f.max is not None else float(high)
            schema = {"anyOf": [text, number]}
    elif kind == "boolean":
        schema = {"type": "boolean"}
    elif kind == "date":
        schema = {"type": "string", "format": "date"}
    elif kind == "datetime":
        schema = {"type": "string", "format": "date-time"}
    elif kind == "choice":
        schema = {"type": "string", "enum": list(f.option_values)}
    elif kind == "multichoice":
        schema = {"type": "array", "items": {"type": "string", "enum": list(f.option_values)}, "uniqueItems": True}
    elif kind == "country":
        schema = {"type": "string", "pattern": "^[A-Za-z]{2}$" if writing else "^[A-Z]{2}$"}
        if not writing:
            schema["description"] = "ISO 3166-1 alpha-2"
    elif kind in ("emails", "phones", "tags"):  # the primary first; the API also reads one as text
        item: dict[str, Any] = {"type": "string", "format": "email"} if kind == "emails" else {"type": "string"}
        if kind == "tags":
            item["maxLength"] = 100
        listed: dict[str, Any] = {"type": "array", "items": item, "maxItems": MAX_VALUES}
        if f.required and writing:
            listed["minItems"] = 1
        schema = {"anyOf": [listed, {"type": "string"}]} if writing else listed
    elif f.kind == "file":  # the id of the attached file (its metadata and content: /{id}/files)
        schema = {"type": "integer", "format": "int64"}
    elif kind == "user":  # a `to: user` link: a login of the CRM's users
        schema = {"type": "string", "maxLength": 100, "x-metacrm-link": "user"}
    elif kind == "users":
        login = {"type": "string", "minLength": 1, "maxLength": 100}
        schema = {"type": "array", "items": login, "uniqueItems": True, "x-metacrm-link": "user"}
        if f.required and writing:
            schema["minItems"] = 1
    else:  # json: any structured value
        schema = {}
    return schema


def _portable(pattern: str) -> bool:
    """Whether a model's pattern (Python ``regex``) reads the same as an ECMA 262 pattern:
    clients validate with the latter; a pattern using Python-only syntax is left out."""
    if re.search(r"\(\?[P<#aiLmsux]|\\[AZzpP]|\[\[:|\(\?<[=!]?[A-Za-z]", pattern):
        return False
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _describe(schema: dict, member) -> dict:
    schema = {**schema, "title": member.label or member.name}
    if getattr(member, "help", None):
        schema["description"] = member.help
    elif getattr(member, "user_link", False):
        many = member.type == "users"
        schema["description"] = f"A link to users: {'the logins' if many else 'the login'} of the CRM's users"
    return schema


def _field(f: Field, *, writing: bool, nullable: bool) -> dict:
    schema = _value_schema(f, writing=writing)
    if "anyOf" in schema and nullable:
        schema = {"anyOf": [*schema["anyOf"], {"type": "null"}]}
    elif nullable:
        schema = _nullable(schema)
    schema = _describe(schema, f)
    if f.derived:
        schema["readOnly"] = True
        schema["description"] = (f"{f.help} " if f.help else "") + f"Computed: {f.derived}."
    elif f.kind == "file":
        schema["readOnly"] = True
        schema["description"] = (f"{f.help} " if f.help else "") + "The id of the attached file: see /files."
    elif f.readonly:
        schema["readOnly"] = True
        what = f"Numbered by the system: {f.autonumber}." if f.autonumber else "Set by the system."
        schema["description"] = (f"{f.help} " if f.help else "") + what
    elif writing and f.default is not None and f.default not in ("today", "now"):
        schema["default"] = f.default
    return schema


def _id_schema() -> dict:
    return {"type": "integer", "format": "int64", "minimum": 1, "maximum": INT64_MAX}


def _link_value(link: Link) -> dict:
    if link.polymorphic:
        return {
            "type": "object",
            "properties": {"entity": {"type": "string", "enum": list(link.targets)}, "id": _id_schema()},
            "required": ["entity", "id"],
            "additionalProperties": False,
        }
    return _id_schema()


def _link_rows(link: Link, *, writing: bool) -> dict:
    """A linked pair of a many-link with fields: the target's id and the link's values."""
    props: dict[str, Any] = {"id": _id_schema()}
    for f in link.fields.values():
        props[f.name] = _field(f, writing=writing, nullable=not f.required or not writing)
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    schema["required"] = ["id"] if writing else ["id", *link.fields]
    return schema


def _link(link: Link, *, expanded: bool = False, nullable: bool = True, writing: bool = False) -> dict:
    one = _link_value(link)
    if writing and link.fields:  # an id, or {"id": 4, "qty": 3}
        one = {"anyOf": [one, _link_rows(link, writing=True)]}
    if expanded:  # a list's `expand=`: the id or the linked record's title inline
        one = {"anyOf": [one, {"$ref": REF + "LinkRef"}]}
    if link.many:
        schema: dict = {"type": "array", "items": one}
    elif nullable and not link.required:
        schema = {"anyOf": [one, {"type": "null"}]} if "anyOf" in one or "$ref" in one else _nullable(one)
    else:
        schema = one
    targets = " or ".join(link.targets)
    what = f"The linked {targets} records' ids" if link.many else f"The linked {targets} record's id"
    return _describe(schema, link) | {"description": link.help or what}


def _stages(ent: Entity) -> list[str]:
    seen: dict[str, None] = {}
    for pipeline in ent.pipelines.values():
        seen.update(dict.fromkeys(pipeline.stages))
    return list(seen)


_SYSTEM = {
    "created_at": {"type": "string", "format": "date-time", "readOnly": True, "title": "Created at"},
    "updated_at": {"type": "string", "format": "date-time", "readOnly": True, "title": "Updated at"},
    "version": {
        "type": "integer",
        "minimum": 1,
        "readOnly": True,
        "title": "Version",
        "description": "Grows by one with every change; the record's ETag",
    },
    "created_by": {
        "type": ["string", "null"],
        "readOnly": True,
        "title": "Created by",
        "description": "The login of the user who created the record (null: the system)",
    },
    "updated_by": {
        "type": ["string", "null"],
        "readOnly": True,
        "title": "Updated by",
        "description": "The login of the user who last changed the record (null: the system)",
    },
}


_ARCHIVE = {  # an entity with archive: true
    "archived_at": {
        "type": ["string", "null"],
        "format": "date-time",
        "readOnly": True,
        "title": "Archived at",
        "description": "When the record was archived (deleted, kept): null while it is live",
    },
    "archived_by": {
        "type": ["string", "null"],
        "readOnly": True,
        "title": "Archived by",
        "description": "The login of the user who archived it (null: the system, or live)",
    },
}


# -- the schemas of one entity ---------------------------------------------------------------------
def read_schema(ent: Entity, *, item: bool = False) -> dict:
    """A record as the API answers it; ``item``: as a list returns it (``fields=`` may leave
    keys out, ``expand=`` puts linked records' titles inline)."""
    props: dict[str, Any] = {"id": _id_schema() | {"readOnly": True, "title": "Id"}}
    for f in ent.fields.values():
        props[f.name] = _field(f, writing=False, nullable=not f.required or bool(f.derived))
    for link in ent.links.values():
        props[link.name] = _link(link, expanded=item)
        if link.many and link.fields:
            props[f"{link.name}.link"] = {
                "type": "array",
                "items": _link_rows(link, writing=False),
                "readOnly": True,
                "title": f"{link.label or link.name}: values",
                "description": f"Each linked {link.target} with the link's fields ({', '.join(link.fields)})",
            }
    if ent.owner:
        props["owner"] = {"type": ["string", "null"], "title": "Owner", "description": "The responsible user's login"}
    if ent.has_stages:
        if ent.multi_pipeline:
            props["pipeline"] = {"type": "string", "enum": list(ent.pipelines), "title": "Pipeline"}
        props["stage"] = {
            "type": "string",
            "enum": _stages(ent),
            "readOnly": True,
            "title": "Stage",
            "description": f"Changes only through POST /{ent.name}/{{id}}/move",
        }
    props.update(_SYSTEM)
    if ent.archive:
        props.update(_ARCHIVE)
    schema: dict[str, Any] = {"type": "object", "title": ent.label or ent.name, "properties": props}
    if ent.description:
        schema["description"] = ent.description
    schema["required"] = ["id"] if item else list(props)
    return schema


def write_schema(ent: Entity, *, patch: bool) -> dict:
    """The body of a create (``required`` as the model says) or of a patch (any subset)."""
    props: dict[str, Any] = {}
    required = []
    for f in ent.fields.values():
        if f.derived or f.readonly or f.kind == "file":  # a user's value is refused
            continue
        props[f.name] = _field(f, writing=True, nullable=not f.required)
        if f.required and f.default is None and not patch:
            required.append(f.name)
    for c in ent.composites.values():  # the whole as a mapping, or its parts by name: either is required
        props[c.name] = _nullable(
            {
                "type": "object",
                "title": c.label or c.name,
                "description": f"a {c.type}: its parts as a mapping (replacing them all), or each as '{c.name}.<part>'",
                "properties": {part: props[name] for part, name in c.parts if name in props},
                "additionalProperties": False,
            }
        )
        required = [r for r in required if ent.fields[r].part_of != c.name]
    for link in ent.links.values():
        props[link.name] = _link(link, nullable=not link.required, writing=True)
        if link.required and not link.many and not patch:
            required.append(link.name)
    if ent.owner:
        owner = {"type": "string", "minLength": 1, "title": "Owner", "description": "A user's login"}
        props["owner"] = owner if patch else _nullable(owner) | {"description": "A user's login (default: you)"}
    if ent.has_stages and not patch:
        props["pipeline"] = {
            "type": "string",
            "enum": list(ent.pipelines),
            "title": "Pipeline",
            "description": "The pipeline the record starts in (default: the first declared)",
        }
    schema: dict[str, Any] = {
        "type": "object",
        "title": f"{ent.label or ent.name}: {'changes' if patch else 'a new record'}",
        "properties": props,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def entity_schemas(ent: Entity) -> dict[str, dict]:
    name = ent.name
    return {
        f"{name}.read": read_schema(ent),
        f"{name}.item": read_schema(ent, item=True),
        f"{name}.create": write_schema(ent, patch=False),
        f"{name}.patch": write_schema(ent, patch=True),
        f"{name}.page": {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": _ref(f"{name}.item")},
                "next": {
                    "type": ["string", "null"],
                    "format": "uri-reference",
                    "description": "The next page's URL (follow it as it is); null on the last page",
                },
                "count": {"type": "integer", "minimum": 0, "description": "With count=true: every matching record"},
            },
            "required": ["items", "next"],
        },
    }


# -- shared schemas --------------------------------------------------------------------------------
def _ref(name: str) -> dict:
    return {"$ref": REF + name}


def _object(props: dict, required=(), **extra) -> dict:
    return {"type": "object", "properties": props, **({"required": list(required)} if required else {}), **extra}


_STR, _INT, _NUM, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
_NSTR, _NINT, _NNUM = {"type": ["string", "null"]}, {"type": ["integer", "null"]}, {"type": ["number", "null"]}
_DECIMAL = {"type": ["string", "null"], "format": "decimal"}
_TIME = {"type": "string", "format": "date-time"}


def shared_schemas() -> dict[str, dict]:
    stage_row = {
        "stage": _STR,
        "label": _STR,
        "kind": {"type": "string", "enum": ["open", "won", "lost"]},
        "probability": _NNUM,
    }
    funnel = _object(
        {
            "entity": _STR,
            "pipeline": _STR,
            "amount_field": _NSTR,
            "count": _INT,
            "won": _INT,
            "lost": _INT,
            "win_rate": _NNUM,
            "forecast": _DECIMAL,
            "stages": {
                "type": "array",
                "items": _object(
                    {
                        **stage_row,
                        "now": _INT,
                        "reached": _INT,
                        "amount": _DECIMAL,
                        "forecast": _DECIMAL,
                        "conversion_next": _NNUM,
                        "conversion_won": _NNUM,
                        "median_seconds": _NNUM,
                    },
                    ["stage", "now", "reached"],
                ),
            },
        },
        ["entity", "pipeline", "stages"],
    )
    return {
        "Problem": _object(
            {
                "type": {"type": "string", "format": "uri-reference", "description": "/problems/SLUG"},
                "title": _STR,
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string", "description": "One line: what is wrong and what is allowed"},
                "errors": {"type": "array", "items": _ref("ProblemIssue")},
                "position": {"type": ["integer", "null"], "description": "Of a bad expression: the column"},
                "allowed": {"type": "array", "description": "Of a refused move: each move and what it lacks"},
                "request_id": {"type": "string", "description": "Of a 500: the server log's key"},
                "existing": {"type": "array", "description": "Of a unique conflict: the records holding the value"},
            },
            ["type", "title", "status", "detail"],
            description="An RFC 9457 problem document (application/problem+json)",
        ),
        "ProblemIssue": _object(
            {
                "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                "field": _NSTR,
                "entity": _NSTR,
                "message": _STR,
                "type": _STR,
            },
            ["loc", "message"],
        ),
        "LinkRef": _object(
            {
                "entity": _STR,
                "id": _id_schema(),
                "title": _NSTR,
                "hidden": {"type": "boolean", "description": "The acting user may not read the record"},
            },
            ["entity", "id", "title"],
            description="A linked record with its title (expand=)",
        ),
        "Deleted": {
            "anyOf": [
                _object(
                    {"deleted": {"type": "object", "additionalProperties": {"type": "array", "items": _INT}}},
                    ["deleted"],
                    description="Every record the delete removed (cascades included), by entity",
                ),
                _object(
                    {"archived": {"type": "object", "additionalProperties": {"type": "array", "items": _INT}}},
                    ["archived"],
                    description="An entity with archive: true: the record archived (kept, hidden; restore brings it back)",
                ),
            ]
        },
        "Purged": _object(
            {"purged": {"type": "object", "additionalProperties": {"type": "array", "items": _INT}}},
            ["purged"],
            description="Every record the purge removed for good (cascades included), by entity",
        ),
        "Move": _object(
            {**stage_row, "possible": _BOOL, "reasons": {"type": "array", "items": _STR}},
            ["stage", "possible", "reasons"],
        ),
        "Activity": _object(
            {
                "at": _TIME,
                "entity": _STR,
                "record_id": _INT,
                "action": _STR,
                "by": _NSTR,
                "changes": {"type": ["object", "null"]},
                "kind": _NSTR,
                "text": _NSTR,
                "via": _NSTR,
            },
            ["at", "entity", "record_id", "action"],
        ),
        "Board": _object(
            {
                "entity": _STR,
                "pipeline": _STR,
                "count": _INT,
                "amount": _DECIMAL,
                "columns": {
                    "type": "array",
                    "items": _object(
                        {
                            **stage_row,
                            "count": _INT,
                            "amount": _DECIMAL,
                            "more": _INT,
                            "records": {"type": "array", "items": {"type": "object"}},
                        },
                        ["stage", "count", "records"],
                    ),
                },
            },
            ["entity", "pipeline", "columns"],
        ),
        "Task": _object(
            {
                "entity": _STR,
                "id": _INT,
                "title": _NSTR,
                "due": {"type": ["string", "null"], "format": "date-time"},
                "owner": _NSTR,
                "done": _BOOL,
                "overdue": _BOOL,
                "record": {"type": "object"},
            },
            ["entity", "id"],
        ),
        "SearchHit": _object(
            {"entity": _STR, "id": _INT, "title": _NSTR, "snippet": _NSTR, "rank": _NUM}, ["entity", "id"]
        ),
        "Funnel": funnel,
        "Group": _object(
            {
                "entity": _STR,
                "by": _STR,
                "rows": {"type": "array", "items": _object({"value": {}, "label": _NSTR, "count": _INT})},
                "total": {"type": "object"},
            },
            ["entity", "by", "rows"],
        ),
        "ImportReport": _object(
            {
                "entity": _STR,
                "rows": _INT,
                "created": _INT,
                "ids": {"type": "array", "items": _INT},
                "rejected_rows": {"type": "array"},
                "issues": {"type": "array"},
            },
            ["entity", "rows", "created"],
        ),
        "Me": _object(
            {"login": _STR, "name": _NSTR, "roles": {"type": "array", "items": _STR}, "team": _NSTR, "email": _NSTR},
            ["login", "roles"],
        ),
        "Model": _object(
            {"name": _STR, "label": _NSTR, "sha256": _STR, "entities": {"type": "array", "items": {"type": "object"}}},
            ["name", "entities"],
            description="The model: entities, fields, links and inverses, pipelines, roles",
        ),
        "Health": _object({"status": {"const": "ok"}, "model": _STR, "sha256": _STR}, ["status"]),
    }


def problem_responses() -> dict[str, dict]:
    out = {}
    for status, when in _WHEN.items():
        response: dict[str, Any] = {
            "description": f"{_TITLES[status]}. {when}",
            "content": {PROBLEM: {"schema": _ref("Problem")}},
            "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
        }
        if status == 401:
            response["headers"]["WWW-Authenticate"] = {"schema": _STR, "description": 'Bearer realm="metacrm"'}
        if status in (429, 503):
            response["headers"]["Retry-After"] = {"schema": _STR, "description": "Seconds to wait"}
        out[str(status)] = response
    return out


__all__ = ["entity_schemas", "problem_responses", "read_schema", "shared_schemas", "write_schema"]
