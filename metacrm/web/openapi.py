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

from ..model.metamodel import Entity, Model
from ..runtime.journal import KINDS
from ..runtime.records import ORDERABLE_SYSTEM
from .openapi_schemas import (
    _STR,
    _object,
    _ref,
    _stages,
    entity_schemas,
    problem_responses,
    shared_schemas,
)

JSON = "application/json"

# the statuses every operation behind a token can answer, and those of each kind of operation
_COMMON = (400, 401, 403, 503)
_WRITE = (409, 413, 415, 422)


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
        more: dict[str, dict] | None = None,
        security: list | None = None,
    ):
        self.summary, self.success, self.status, self.body = summary, success, status, body
        self.problems = tuple(sorted({*(() if public else _COMMON), *problems}))
        self.params, self.more = params, more or {}
        self.security = [] if public and security is None else security


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
        **(_archive_operations(ent) if ent.archive else {}),
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


def _archive_operations(ent: Entity) -> dict[str, Operation]:
    """restore and purge (an entity with ``archive: true``: its delete archives)."""
    name, label = ent.name, ent.label or ent.name
    return {
        f"restore_{name}": Operation(
            f"Bring an archived {label} record back",
            _json(_ref(f"{name}.read"), "The record, live again", {**_ETAG}),
            problems=(404, 409, 422),
        ),
        f"purge_{name}": Operation(
            f"Remove a {label} record for good (archived or not)",
            _json(_ref("Purged"), "What was removed"),
            problems=(404, 409),
        ),
    }


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
        declared = (
            ent.links.get(link_name)
            or model.entities[ent.inverses[link_name].source].links[ent.inverses[link_name].link]
        )
        for verb, summary in (("link", "Link"), ("unlink", "Unlink")):
            body = None
            if verb == "link" and declared.fields:  # optional: the link's values
                body = _body(_link_values(declared), JSON, description="The link's fields (set, or changed)")
                body["required"] = False
            ops[f"{verb}_{name}_{link_name}"] = Operation(
                f"{summary} a record through {link_name}",
                _json({"type": "object"}, "The record after the change"),
                problems=(404, 409, 422),
                body=body,
            )
    return ops


def _link_values(link) -> dict:
    from .openapi_schemas import _link_rows

    schema = _link_rows(link, writing=True)
    props = {k: v for k, v in schema["properties"].items() if k != "id"}
    return {"type": "object", "properties": props, "additionalProperties": False}


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


def _form_operations(model: Model) -> dict[str, Operation]:
    """The public intake forms (docs/forms.md): no token, but a token-bound form takes one."""
    submission = _object(
        {
            "status": {"type": "string", "enum": ["received", "created", "duplicate"]},
            "id": {"type": "integer"},
            "form": _STR,
            "entity": _STR,
            "owner": {"type": ["string", "null"]},
        },
        ["status"],
    )
    fields = sorted({f for form in model.forms.values() for f in form.fields})
    body = _object({name: {} for name in fields}, description="The form's fields (and its honeypot)")
    return {
        "submit_form": Operation(
            "Submit a form",
            _json(submission, "Received (a public form answers only that); for a token-bound form the result"),
            problems=(400, 401, 404, 413, 415, 422, 429, 503),
            body=_body(body, JSON, "application/x-www-form-urlencoded"),
            public=True,
            security=[{}, {"bearer": []}],
            more={
                "201": _json(submission, "A token-bound form created the record"),
                "303": {
                    "description": "A browser posting the HTML form goes on to the form's redirect",
                    "headers": {"Location": {"schema": _STR}},
                },
            },
        ),
        "form_html": Operation(
            "A public form as embeddable HTML",
            {"description": "An HTML page holding the form", "content": {"text/html": {"schema": _STR}}},
            problems=(404, 503),
            public=True,
        ),
    }


def operations(model: Model) -> dict[str, Operation]:
    """Every operation the routes declare, by operation id."""
    ops = {**_global_operations(model), **_form_operations(model)}
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
    choosable += ["created_by", "updated_by"]
    system = {"id", "created_at", "updated_at", "version", "created_by", "updated_by"}
    if ent.archive:
        choosable += ["archived_at", "archived_by"]
        system |= {"archived_at", "archived_by"}
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
        ("submit_form", "name"): list(model.forms),
        ("form_html", "name"): [name for name, form in model.forms.items() if not form.token],
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
    responses = {str(spec.status): spec.success, **spec.more}
    for status in spec.problems:
        responses[str(status)] = {"$ref": f"#/components/responses/{status}"}
    op["responses"] = responses
    if spec.security is not None:
        op["security"] = spec.security


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
            else:  # a route this module does not describe yet: at least no dangling reference
                op["parameters"] = [_clean_parameter(p) for p in op.get("parameters", [])] or op.pop("parameters", [])
                op["responses"] = {k: v for k, v in op["responses"].items() if "ValidationError" not in str(v)}
                op["responses"].update({str(s): {"$ref": f"#/components/responses/{s}"} for s in _COMMON})
    schemas = shared_schemas()
    for ent in model.entities.values():
        schemas.update(entity_schemas(ent))
    doc["components"] = {
        "schemas": schemas,
        "responses": problem_responses(),
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


__all__ = ["build_openapi", "install", "operations"]
