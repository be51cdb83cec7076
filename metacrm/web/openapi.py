"""The OpenAPI 3.1 document of the API (``GET /api/v1/openapi.json``), generated from the model.

FastAPI's own generator gives the paths and the query and path parameters straight from the
handlers' signatures (so the two never disagree); everything the handlers read by hand is added
here from the model: per entity a read, a create and a patch schema (JSON Schema types and
formats, enums for choices and stages, ``required`` for create, ``readOnly`` for system and
derived fields, labels as titles, nullable values as type arrays), request bodies, the success
responses with their schemas and headers, and the problem responses (RFC 9457, one shared
``Problem`` schema) each operation can answer. Built once per app (the model is frozen).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..model.bounds import RANGES
from ..model.metamodel import Entity, Field, Link, Model
from ..runtime.journal import KINDS
from ..runtime.records import ORDERABLE_SYSTEM
from .problems import _TITLES, PROBLEM

JSON = "application/json"
INT64_MAX = 2**63 - 1
REF = "#/components/schemas/"

# the statuses every operation behind a token can answer, and those of each kind of operation
_COMMON = (400, 401, 403, 503)
_WRITE = (409, 413, 415, 422)
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


def _decimal_pattern(scale: int, *, signed: bool) -> str:
    return rf"^{'-?' if signed else ''}[0-9]{{1,{18 - scale}}}(\.[0-9]{{1,{scale}}})?$"


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
    elif kind in ("decimal", "money", "percent"):
        scale = 2 if kind == "money" else 6
        signed = f.min is None or f.min < 0
        text = {"type": "string", "format": "decimal", "pattern": _decimal_pattern(scale, signed=signed)}
        if not writing:  # exact: the API writes decimals as strings
            schema = {"type": "string", "format": "decimal"}
        else:  # a JSON number is read exactly as written, a string of digits too
            low, high = RANGES[kind]
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


def _link(link: Link, *, expanded: bool = False, nullable: bool = True) -> dict:
    one = _link_value(link)
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
        if f.derived:
            continue
        props[f.name] = _field(f, writing=True, nullable=not f.required)
        if f.required and f.default is None and not patch:
            required.append(f.name)
    for link in ent.links.values():
        props[link.name] = _link(link, nullable=not link.required)
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
        "Deleted": _object(
            {"deleted": {"type": "object", "additionalProperties": {"type": "array", "items": _INT}}},
            ["deleted"],
            description="Every record the delete removed (cascades included), by entity",
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


def _problem_responses() -> dict[str, dict]:
    out = {}
    for status, when in _WHEN.items():
        response: dict[str, Any] = {
            "description": f"{_TITLES[status]}. {when}",
            "content": {PROBLEM: {"schema": _ref("Problem")}},
            "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
        }
        if status == 401:
            response["headers"]["WWW-Authenticate"] = {"schema": _STR, "description": 'Bearer realm="metacrm"'}
        if status == 503:
            response["headers"]["Retry-After"] = {"schema": _STR, "description": "Seconds to wait"}
        out[str(status)] = response
    return out


# -- operations ----------------------------------------------------------------------------------------
def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    out["headers"] = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, **(headers or {})}
    return out


def _body(schema: dict, *types: str, description: str | None = None) -> dict:
    body: dict[str, Any] = {"required": True, "content": {t: {"schema": schema} for t in types or (JSON,)}}
    if description:
        body["description"] = description
    return body


_ETAG = {"ETag": {"schema": _STR, "description": 'The record\'s version, as `"N"`: send it back in If-Match'}}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'The version the record must still be at (its ETag, `"N"`): else 412 and nothing is written',
    "schema": {"type": "string", "pattern": r'^(\*|(W/)?"[0-9]{1,18}")$'},
}
_PARAMS = {
    "name": "p",
    "in": "query",
    "required": False,
    "style": "form",
    "explode": True,
    "description": "The values of `:NAME` in `where`, each as its own parameter `p.NAME=value`",
    "schema": {
        "type": "object",
        "propertyNames": {"pattern": r"^p\.[A-Za-z_][A-Za-z0-9_]*$"},
        "additionalProperties": {"type": "string"},
    },
}


class Operation:
    """What the document says of one operation: its body, success, problems and extras."""

    def __init__(
        self,
        summary: str,
        success: dict,
        *,
        status: int = 200,
        problems: tuple[int, ...] = (),
        body: dict | None = None,
        params: tuple[dict, ...] = (),
        public: bool = False,
    ):
        self.summary, self.success, self.status, self.body = summary, success, status, body
        self.problems = tuple(sorted({*(() if public else _COMMON), *problems}))
        self.params, self.public = params, public


def _names_pattern(names: list[str], *, signed: bool = False) -> str:
    one = ("-?" if signed else "") + "(" + "|".join(re.escape(n) for n in names) + ")"
    return rf"^{one}(,{one})*$"


def _entity_operations(ent: Entity) -> dict[str, Operation]:
    name, label = ent.name, ent.label or ent.name
    record = _ref(f"{name}.read")
    record_response = _json(record, f"The {label} record", _ETAG)
    ops = {
        f"list_{name}": Operation(
            f"List {ent.plural or label}",
            _json(
                _ref(f"{name}.page"),
                "A page of records",
                {"Link": {"schema": _STR, "description": 'The next page: `<URL>; rel="next"`'}},
            ),
            params=(_PARAMS,),
        ),
        f"create_{name}": Operation(
            f"Create {label} records",
            _json(
                {"anyOf": [record, _object({"items": {"type": "array", "items": record}}, ["items"])]},
                "The record created (for an array: `items`, every record in order)",
                {**_ETAG, "Location": {"schema": _STR, "description": "The new record's URL"}},
            ),
            status=201,
            problems=_WRITE,
            body=_body(
                {
                    "anyOf": [
                        _ref(f"{name}.create"),
                        {"type": "array", "items": _ref(f"{name}.create"), "minItems": 1},
                    ]
                },
                description="One record, or an array of records (all or none)",
            ),
        ),
        f"export_{name}": Operation(
            f"Export {ent.plural or label} as CSV",
            {"description": "CSV (UTF-8)", "content": {"text/csv": {"schema": _STR}}},
            params=(_PARAMS,),
        ),
        f"import_{name}": Operation(
            f"Import {ent.plural or label} from CSV",
            _json(_ref("ImportReport"), "The import report"),
            problems=(409, 413, 415, 422),
            body=_body(_STR, "text/csv", description="A CSV file with a header row of field names"),
        ),
        f"get_{name}": Operation(f"Get a {label} record", record_response, problems=(404,)),
        f"update_{name}": Operation(
            f"Change a {label} record",
            record_response,
            problems=(404, 412, *_WRITE),
            body=_body(_ref(f"{name}.patch"), JSON, "application/merge-patch+json"),
            params=(_IF_MATCH,),
        ),
        f"delete_{name}": Operation(
            f"Delete a {label} record",
            _json(_ref("Deleted"), "What was deleted"),
            problems=(404, 409, 412),
            params=(_IF_MATCH,),
        ),
        f"history_{name}": Operation(
            f"A {label} record's timeline",
            _json({"type": "array", "items": _ref("Activity")}, "Newest first"),
            problems=(404,),
        ),
        f"note_{name}": Operation(
            f"Add an activity to a {label} record",
            _json(_ref("Activity"), "The journal entry"),
            status=201,
            problems=(404, 413, 415, 422),
            body=_body(
                _object(
                    {"text": {"type": "string", "minLength": 1}, "kind": {"type": "string", "enum": list(KINDS)}},
                    ["text"],
                    additionalProperties=False,
                )
            ),
        ),
    }
    if ent.has_stages:
        ops[f"board_{name}"] = Operation(f"The {label} board", _json(_ref("Board"), "The kanban columns"))
        ops[f"move_{name}"] = Operation(
            f"Move a {label} record to a stage",
            record_response,
            problems=(404, 412, *_WRITE),
            body=_body(
                _object(
                    {
                        "stage": {"type": "string", "enum": _stages(ent)},
                        "note": {"type": "string"},
                        "version": {"type": "integer", "minimum": 1, "description": "As If-Match"},
                    },
                    ["stage"],
                    additionalProperties=False,
                )
            ),
            params=(_IF_MATCH,),
        )
        ops[f"moves_{name}"] = Operation(
            f"Every move from a {label} record's stage",
            _json({"type": "array", "items": _ref("Move")}, "Each move, possible or not, with what it lacks"),
            problems=(404,),
        )
    return ops


def _link_operations(model: Model, ent: Entity) -> dict[str, Operation]:
    ops = {}
    name = ent.name
    for link_name in [*ent.links, *ent.inverses]:
        if link_name in ent.links:
            targets = ent.links[link_name].targets
        else:
            targets = (ent.inverses[link_name].source,)
        items = [_ref(f"{t}.read") for t in targets]
        row = items[0] if len(items) == 1 else {"anyOf": items}
        ops[f"related_{name}_{link_name}"] = Operation(
            f"The records {link_name} of a {ent.label or name} record",
            _json(_object({"items": {"type": "array", "items": row}}, ["items"]), "The linked records"),
            problems=(404,),
            params=(_PARAMS,),
        )
        for verb, summary in (("link", "Link"), ("unlink", "Unlink")):
            ops[f"{verb}_{name}_{link_name}"] = Operation(
                f"{summary} a record through {link_name}",
                _json({"type": "object"}, "The record after the change"),
                problems=(404, 409, 422),
            )
    return ops


def _global_operations(model: Model) -> dict[str, Operation]:
    return {
        "healthz": Operation(
            "Is the server ready", _json(_ref("Health"), "The database answers and holds this model"), public=True
        ),
        "model": Operation("The model", _json(_ref("Model"), "The model as JSON")),
        "me": Operation("The acting user", _json(_ref("Me"), "The token's user and their roles")),
        "tasks": Operation("Open tasks", _json({"type": "array", "items": _ref("Task")}, "Tasks"), problems=(404,)),
        "search": Operation(
            "Full-text search",
            _json({"type": "array", "items": _ref("SearchHit")}, "Hits, best first"),
            problems=(404,),
        ),
        "funnel": Operation(
            "The funnel report",
            _json(
                {"anyOf": [_ref("Funnel"), {"type": "array", "items": _ref("Funnel")}]},
                "The funnel (with `by`: one per group)",
            ),
            problems=(404,),
        ),
        "group": Operation("A grouped report", _json(_ref("Group"), "Counts and sums per group"), problems=(404,)),
    }


def operations(model: Model) -> dict[str, Operation]:
    """Every operation the routes declare, by operation id."""
    ops = _global_operations(model)
    for ent in model.entities.values():
        ops.update(_entity_operations(ent))
        ops.update(_link_operations(model, ent))
    return ops


# -- the document --------------------------------------------------------------------------------------
def _clean_parameter(param: dict) -> dict:
    """FastAPI's optional query parameter ``anyOf: [T, null]`` as plain ``T`` (a query string
    cannot carry a null: leaving the parameter out is how to give none)."""
    schema = dict(param.get("schema", {}))
    options = schema.pop("anyOf", None)
    if options:
        kept = [o for o in options if o.get("type") != "null"]
        schema.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
    schema.pop("title", None)
    return {**param, "schema": schema}


def _list_parameters(ent: Entity, params: list[dict]) -> list[dict]:
    """The list's fields/expand/order_by as patterns of the names they accept."""
    choosable = [*ent.fields, *ent.links, "owner", "stage", "version", "created_at", "updated_at"]
    system = {"id", "created_at", "updated_at", "version"}
    system |= {"owner"} if ent.owner else set()
    system |= {"pipeline", "stage", "stage_entered_at", "closed_at"} if ent.has_stages else set()
    orderable = [*ent.fields, *[n for n in ent.links if not ent.links[n].many]]
    orderable += [n for n in ORDERABLE_SYSTEM if n in system]
    patterns = {
        "fields": _names_pattern(choosable),
        "expand": _names_pattern(list(ent.links)) if ent.links else None,
        "order_by": _names_pattern(list(dict.fromkeys(orderable)), signed=True),
    }
    out = []
    for param in params:
        pattern = patterns.get(param["name"])
        if pattern:
            param = {**param, "schema": {**param["schema"], "pattern": pattern}}
        out.append(param)
    return out


def _choices(model: Model, op_id: str, params: list[dict]) -> list[dict]:
    """Parameters naming an entity or a pipeline, as enums of the names the model has."""
    staged = [e.name for e in model.entities.values() if e.has_stages]
    names = {
        ("funnel", "entity"): staged,
        ("group", "entity"): list(model.entities),
        ("search", "entity"): list(model.entities),
        ("tasks", "entity"): [e.name for e in model.entities.values() if e.task is not None],
        ("funnel", "pipeline"): sorted({p for e in model.entities.values() for p in e.pipelines}),
    }
    for ent in model.entities.values():
        if ent.has_stages:
            names[(f"board_{ent.name}", "pipeline")] = list(ent.pipelines)
    out = []
    for param in params:
        allowed = names.get((op_id, param["name"]))
        if allowed:
            param = {**param, "schema": {**param["schema"], "enum": allowed}}
        out.append(param)
    return out


def _apply(model: Model, op: dict, spec: Operation, ent: Entity | None) -> None:
    params = _choices(model, op["operationId"], [_clean_parameter(p) for p in op.get("parameters", [])])
    if ent is not None and op["operationId"] == f"list_{ent.name}":
        params = _list_parameters(ent, params)
    op["parameters"] = params + list(spec.params)
    if not op["parameters"]:
        del op["parameters"]
    op["summary"] = spec.summary
    if spec.body is not None:
        op["requestBody"] = spec.body
    responses = {str(spec.status): spec.success}
    for status in spec.problems:
        responses[str(status)] = {"$ref": f"#/components/responses/{status}"}
    op["responses"] = responses
    if spec.public:
        op["security"] = []


def build_openapi(app, model: Model) -> dict:
    """The OpenAPI 3.1 document of ``app`` (built by :func:`metacrm.web.app.build_app`)."""
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version="3.1.0",
        description=(
            f"The HTTP API of the model `{model.name}`, generated from it: every entity's records, "
            "links, stages, activity, CSV and reports. Send `Authorization: Bearer <token>` "
            "(`metacrm token create LOGIN`). Errors are RFC 9457 problem documents."
        ),
        routes=app.routes,
    )
    specs = operations(model)
    owners: dict[str, Entity] = {}
    for ent in model.entities.values():
        owners.update(dict.fromkeys((op for op in _entity_operations(ent)), ent))
    for item in doc.get("paths", {}).values():
        for op in item.values():
            spec = specs.get(op.get("operationId", ""))
            if spec is not None:
                _apply(model, op, spec, owners.get(op["operationId"]))
    schemas = shared_schemas()
    for ent in model.entities.values():
        schemas.update(entity_schemas(ent))
    doc["components"] = {
        "schemas": schemas,
        "responses": _problem_responses(),
        "headers": {"X-Request-Id": {"schema": _STR, "description": "The request's id (the client's, if sane)"}},
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token: `metacrm token create LOGIN` prints one",
            }
        },
    }
    doc["security"] = [{"bearer": []}]
    return doc


def install(app, model: Model) -> Callable[[], dict]:
    """Make ``app.openapi()`` (served at the app's ``openapi_url``) answer our document,
    built on first use and kept."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, model)
        return app.openapi_schema

    app.openapi = openapi
    return openapi


__all__ = ["build_openapi", "entity_schemas", "install", "operations"]
