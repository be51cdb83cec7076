"""The list page's tools (docs/web.md, "Lists"): the columns a user chooses, the filter builder,
the CSV export of the current filter and the bulk actions, for every entity. The list page
itself is ``/{entity}`` in pages.py; it reads its columns and its controls from here.

- ``POST /{entity}/columns`` stores the columns the user ticked as their preference
  ``list.{entity}.columns`` (metacrm/runtime/preferences.py); ``reset`` removes it, so the
  default applies again: the entity's ``list`` (when the model gives one), else every field but
  long text, the single links, the stage and the owner. A stored column the model no longer has
  is skipped, so a model change never breaks a page.
- ``GET /{entity}/filter`` turns the builder's rows (``bf`` field, ``bo`` operator, ``bv`` value,
  repeated; ``bj`` ``and``/``or``) into an expression of the expression language, joined with
  ``and`` to the ``where`` already applied, and sends the browser to the list with that
  ``where`` in its raw box: the same path as a typed filter, and the user sees the language.
  Text values are quoted (a quote doubled), numbers must be numbers, choices and stages are
  taken by value or label.
- ``GET /{entity}/export.csv`` streams the library's export (``export_csv``: every field, link,
  owner and stage column, CSV injection neutralised) of the records the user may export that
  match the list's ``where`` and ``q``, in its ``order_by``.
- ``POST /{entity}/bulk`` moves, assigns or deletes the ticked records through the library as
  the signed-in user, each record in its own transaction: what the library refuses is reported
  per record with its reason and the others are done. A delete asks for a confirmation first.
  A record the user may not read is reported exactly as a missing one.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations

import re
import tempfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response, StreamingResponse

from .. import errors as E
from ..model.composite import Composite
from ..model.metamodel import Entity, Field, Link
from ..runtime.access import scope
from ..runtime.preferences import preference, set_preference
from .app import route_path

MAX_BULK = 500  # records one bulk action may name
BUILDER_ROWS = 2  # empty condition rows offered below the ones given
SYSTEM_COLUMNS = ("stage", "owner", "pipeline", "created_at", "updated_at")
UNSORTABLE = ("text", "rich_text", "json", "multichoice", "users", "emails", "phones", "tags")
NUMBER = re.compile(r"-?\d+(\.\d+)?")
# operator -> how the builder shows it (the page translates it)
OPERATORS = {
    "=": "=",
    "!=": "≠",
    ">": ">",
    "<": "<",
    ">=": "≥",
    "<=": "≤",
    "contains": "contains",
    "startswith": "starts with",
    "in": "is one of",
    "empty": "is empty",
    "filled": "is not empty",
    "yes": "is yes",
    "no": "is no",
}
TEXT_OPS = ("=", "!=", "contains", "startswith", "empty", "filled")
ORDER_OPS = ("=", "!=", ">", "<", ">=", "<=", "empty", "filled")
CHOICE_OPS = ("=", "!=", "in", "empty", "filled")


@dataclass(frozen=True)
class Column:
    """A column a list can show: a field, a link, or one of the system columns."""

    key: str
    label: str
    kind: str  # field, link, stage, owner, pipeline, created_at, updated_at
    member: Field | Link | Composite | None = None
    sortable: bool = True


def available_columns(ent: Entity) -> list[Column]:
    """Every column the picker offers, in the model's order."""
    out = []
    for f in ent.fields.values():
        composite = ent.composites[f.part_of] if f.part_of else None
        if composite is not None and composite.parts[0][1] == f.name:  # the whole, on one line, first
            out.append(Column(composite.name, composite.label or composite.name, "composite", composite, False))
        out.append(Column(f.name, f.caption, "field", f, f.type not in UNSORTABLE))
    out += [Column(link.name, link.caption, "link", link, False) for link in ent.links.values()]
    if ent.pipelines:
        out.append(Column("stage", "Stage", "stage"))
        if ent.multi_pipeline:
            out.append(Column("pipeline", "Pipeline", "pipeline"))
    if ent.owner:
        out.append(Column("owner", "Owner", "owner"))
    out += [Column("created_at", "Created", "created_at"), Column("updated_at", "Updated", "updated_at")]
    return out


def default_keys(ent: Entity) -> list[str]:
    """The entity's ``list`` when the model gives one, else every field but long text, the
    single links, the stage and the owner."""
    given = getattr(ent, "list", None)
    if given:  # the id is the list's first column anyway (#)
        return [str(k) for k in given if k != "id"]
    keys = [f.part_of or f.name for f in ent.fields.values() if f.type not in ("text", "rich_text")]  # a composite once, whole
    keys += [link.name for link in ent.links.values() if not link.many]
    keys += [k for k, present in (("stage", ent.pipelines), ("owner", ent.owner)) if present]
    return keys


def preference_key(ent: Entity) -> str:
    return f"list.{ent.name}.columns"


def chosen_columns(user, ent: Entity) -> tuple[list[Column], bool]:
    """The columns the user chose (those the model still has), else the default; and whether
    they are the user's own choice."""
    by_key = {c.key: c for c in available_columns(ent)}
    try:
        stored = preference(user, preference_key(ent))
    except E.ValidationError:  # an entity name no key can hold: the default
        stored = None
    if isinstance(stored, list):
        mine = [by_key[k] for k in dict.fromkeys(k for k in stored if isinstance(k, str) and k in by_key)]
        if mine:
            return mine, True
    return [by_key[k] for k in dict.fromkeys(default_keys(ent)) if k in by_key], False


# -- the filter builder ------------------------------------------------------------------------------
class BuilderError(ValueError):
    """A builder row that makes no condition (its message names the field and what is allowed)."""


def filter_members(ent: Entity) -> list[tuple[str, str, tuple[str, ...]]]:
    """(key, label, operators) of everything the builder filters on."""
    out = []
    for f in ent.fields.values():
        ops = operators_of(ent, f.name)
        if ops:
            out.append((f.name, f.caption, ops))
    for link in ent.links.values():
        if not link.many and not link.polymorphic:
            out.append((link.name, link.caption, ("=", "!=", "empty", "filled")))
    if ent.pipelines:
        out.append(("stage", "Stage", ("=", "!=", "in")))
    if ent.owner:
        out.append(("owner", "Owner", ("=", "!=", "in", "empty", "filled")))
    out += [("created_at", "Created", ORDER_OPS[2:6]), ("updated_at", "Updated", ORDER_OPS[2:6])]
    return out


def operators_of(ent: Entity, key: str) -> tuple[str, ...]:
    f = ent.fields.get(key)
    if f is None:
        return ()
    if f.type == "boolean":
        return ("yes", "no")
    if f.type == "choice":
        return CHOICE_OPS
    if f.type in ("multichoice", "users", "emails", "phones"):
        return ("contains",)
    if f.type == "user":  # a login
        return ("=", "!=", "in", "empty", "filled")
    if f.type == "json":
        return ()
    if f.kind == "file":
        return ("empty", "filled")
    if f.field_type.numeric or f.type in ("date", "datetime"):
        return ORDER_OPS
    return TEXT_OPS


def quote(text: str) -> str:
    """A text literal of the expression language: in single quotes, a quote doubled."""
    return "'" + text.replace("'", "''") + "'"


def _choice(what: str, value: str, options: list[tuple[str, str]]) -> str:
    """The option a user named by its value or its label (either case)."""
    wanted = value.strip().casefold()
    for option, label in options:
        if wanted in (option.casefold(), label.casefold()):
            return option
    allowed = ", ".join(option for option, _ in options)
    raise BuilderError(f"filter: {what} has no option '{value.strip()}'; options: {allowed}")


def condition(ent: Entity, key: str, op: str, value: str) -> str:
    """One builder row as an expression (BuilderError when it makes no condition)."""
    members = {k: (label, ops) for k, label, ops in filter_members(ent)}
    if key not in members:
        raise BuilderError(f"filter: {ent.name} has no field '{key}' to filter on; fields: {', '.join(members)}")
    label, ops = members[key]
    what = f"{label} ({key})" if label != key else key
    if op not in ops:
        raise BuilderError(f"filter: {what} takes {', '.join(ops)}; not '{op}'")
    if op in ("empty", "filled"):
        return f"{key} is {'not ' if op == 'filled' else ''}null"
    if op in ("yes", "no"):
        return f"{key} = {'true' if op == 'yes' else 'false'}"
    value = value.strip()
    if not value:
        raise BuilderError(f"filter: {what} {OPERATORS[op]} what? give a value")
    f = ent.fields.get(key)
    options: list[tuple[str, str]] | None = None
    if f is not None and f.options:
        options = [(o.value, o.label or o.value) for o in f.options]
    elif key == "stage":
        options = list(dict.fromkeys((s.name, s.caption) for p in ent.pipelines.values() for s in p.stages.values()))
    if op == "in":
        items = [v for v in value.split(",") if v.strip()]
        given = [_choice(what, v, options) if options else v.strip() for v in items]
        return f"{key} in ({', '.join(quote(v) for v in given)})"
    if options is not None:
        return f"{key} {op} {quote(_choice(what, value, options))}"
    if key in ent.links:
        if not value.isdigit():
            raise BuilderError(f"filter: {what} takes a record number, not '{value}'")
        return f"{key} {op} {int(value)}"
    if f is not None and f.field_type.numeric:
        number = value.replace("\u202f", "").replace("\xa0", "").replace(" ", "").replace(",", ".")
        if not NUMBER.fullmatch(number) or (f.type == "integer" and "." in number):
            kind = "a whole number" if f.type == "integer" else "a number"
            raise BuilderError(f"filter: {what} takes {kind}, not '{value}'")
        return f"{key} {op} {number}"
    return f"{key} {op} {quote(value)}"


def compose(ent: Entity, rows: list[tuple[str, str, str]], join: str, where: str) -> str:
    """The builder's rows joined by ``join`` (``and``/``or``), added with ``and`` to ``where``."""
    parts = [condition(ent, key, op, value) for key, op, value in rows]
    if not parts:
        return where
    joined = f" {'or' if join == 'or' else 'and'} ".join(parts)
    if not where:
        return joined
    if join == "or" and len(parts) > 1:
        joined = f"({joined})"
    existing = f"({where})" if re.search(r"\bor\b", where, re.IGNORECASE) else where
    return f"{existing} and {joined}"


def builder_rows(request: Request) -> list[tuple[str, str, str]]:
    """The rows the builder was given (those with a field chosen)."""
    fields = request.query_params.getlist("bf")
    ops = request.query_params.getlist("bo")
    values = request.query_params.getlist("bv")
    rows = []
    for i, key in enumerate(fields):
        if key:
            rows.append((key, ops[i] if i < len(ops) else "", values[i] if i < len(values) else ""))
    return rows


# -- what the list page shows ---------------------------------------------------------------------------
def may(crm, session: dict, entity: str, action: str) -> bool:
    return scope(crm.model, session["user"].actor, entity, action) != "none"


def bulk_actions(crm, session: dict, ent: Entity) -> list[str]:
    """The bulk actions the user may take on some records of the entity."""
    actions = []
    if ent.pipelines and may(crm, session, ent.name, "move"):
        actions.append("move")
    if ent.owner and may(crm, session, ent.name, "update") and may(crm, session, ent.name, "reassign"):
        actions.append("assign")
    if may(crm, session, ent.name, "delete"):
        actions.append("delete")
    return actions


def list_context(crm, session: dict, ent: Entity, request: Request, rows: list[dict], chosen, own: bool) -> dict:
    """What the list page needs besides its rows: the picker, the builder, the export link, the
    bulk bar (its stages and users)."""
    user = session["user"]
    actions = bulk_actions(crm, session, ent)
    stages = []
    if "move" in actions:
        stages = [(p, list(p.stages.values())) for p in ent.pipelines.values()]
    users = [u["login"] for u in user.users()] if "assign" in actions else []
    params = {k: v for k, v in request.query_params.items() if k in ("where", "q", "order_by") and v}
    export_url = f"/{ent.name}/export.csv" + (f"?{urlencode(params)}" if params else "")
    given = builder_rows(request)
    members = filter_members(ent)
    return {
        "choices": available_columns(ent),
        "chosen_keys": {c.key for c in chosen},
        "own_columns": own,
        "here": route_path(request) + (f"?{request.url.query}" if request.url.query else ""),
        "members": members,
        "member_ops": {k: ops for k, _, ops in members},
        "operators": OPERATORS,
        "builder": [*given, *[("", "", "")] * BUILDER_ROWS],
        "join": "or" if request.query_params.get("bj") == "or" else "and",
        "export_url": export_url if may(crm, session, ent.name, "export") else None,
        "actions": actions,
        "stages": stages,
        "users": users,
        "page_ids": [r["id"] for r in rows],
        "stage_labels": {s.name: s.caption for p in ent.pipelines.values() for s in p.stages.values()},
    }


# -- routes ------------------------------------------------------------------------------------------
def install(router: APIRouter, crm, entities: list[Entity], signed_in, check_csrf, posted, render, pages) -> None:
    """Register the list tools of every entity (before the card's ``/{entity}/{id}``)."""
    for ent in entities:
        _entity_list_tools(router, crm, ent, signed_in, check_csrf, posted, render, pages)


def _local(target: Any, default: str) -> str:
    from .pages import _safe_next

    return _safe_next(target if isinstance(target, str) else None, default)


def _with(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _ids(form: dict) -> list[str]:
    given = form.get("id", [])
    items = [given] if isinstance(given, str) else list(given)
    if form.get("all") == "1":
        page = form.get("page", [])
        items += [page] if isinstance(page, str) else list(page)
    return list(dict.fromkeys(i.strip() for i in items if isinstance(i, str) and i.strip()))


def _entity_list_tools(router, crm, ent: Entity, signed_in, check_csrf, posted, render, pages) -> None:
    from .pages import Refused

    name = ent.name
    base = f"/{name}"

    @router.post(f"{base}/columns")
    async def save_columns(request: Request) -> Response:
        form = await posted(request)
        session = await run_in_threadpool(signed_in, request)
        check_csrf(request, session, form)
        back = _local(form.get("next"), base)
        given = form.get("column", [])
        keys = [given] if isinstance(given, str) else list(given)
        known = [c.key for c in available_columns(ent)]
        keys = [k for k in known if k in keys]  # the picker's order; unknown names dropped
        if form.get("reset") == "1":
            value = None
        elif not keys:
            return RedirectResponse(_with(back, error=f"{name}: choose at least one column to show"), 303)
        else:
            value = keys
        await run_in_threadpool(set_preference, session["user"], preference_key(ent), value)
        return RedirectResponse(back, 303)

    @router.get(f"{base}/filter")
    @pages
    def build_filter(request: Request) -> Response:
        signed_in(request)
        where = (request.query_params.get("where") or "").strip()
        keep = {k: v for k, v in request.query_params.items() if k in ("q", "order_by") and v}
        join = "or" if request.query_params.get("bj") == "or" else "and"
        rows = builder_rows(request)
        try:
            expression = compose(ent, rows, join, where)
        except BuilderError as exc:  # the rows come back to be corrected
            back = [(k, v) for k, v in request.query_params.multi_items() if k in ("bf", "bo", "bv", "bj")]
            query = urlencode([*keep.items(), *([("where", where)] if where else []), *back, ("error", str(exc))])
            return RedirectResponse(f"{base}?{query}", 303)
        params = {**keep, **({"where": expression} if expression else {})}
        return RedirectResponse(f"{base}?{urlencode(params)}" if params else base, 303)

    @router.get(f"{base}/export.csv")
    def export(request: Request) -> Response:
        session = signed_in(request)
        user = session["user"]
        if not may(crm, session, name, "export"):
            raise Refused(403, f"user '{session['login']}' may not export {name} records (scope for export: none)")
        from ..expr import compile_sql
        from ..io.csv_io import export_csv

        where = (request.query_params.get("where") or "").strip() or None
        q = (request.query_params.get("q") or "").strip()
        order_by = (request.query_params.get("order_by") or "").strip() or None
        params: dict[str, Any] = {"me": user.user}  # `created_by = :me`
        try:
            if where:  # its errors point into the text the user gave
                compile_sql(user.storage, name, where, params)
            if q and ent.search:
                params["metacrm_hits"] = [hit["id"] for hit in user.search(q, entity=name, limit=10_000)]
                where = f"id in :metacrm_hits and ({where})" if where else "id in :metacrm_hits"
            # a large export goes to a file first (memory stays bounded), then streams out
            spool = tempfile.SpooledTemporaryFile(max_size=4 << 20, mode="w+", encoding="utf-8", newline="")  # noqa: SIM115
            try:
                export_csv(user, name, spool, where=where, params=params, order_by=order_by)
            except BaseException:
                spool.close()
                raise
        except E.ValidationError as exc:
            raise Refused(400, str(exc)) from None
        spool.seek(0)

        def chunks():
            with spool:
                while block := spool.read(64 << 10):
                    yield block.encode("utf-8")

        return StreamingResponse(
            chunks(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"', "Cache-Control": "no-store"},
        )

    @router.post(f"{base}/bulk")
    async def bulk(request: Request) -> Response:
        form = await posted(request)
        session = await run_in_threadpool(signed_in, request)
        check_csrf(request, session, form)
        return await run_in_threadpool(lambda: _bulk(request, session, form))

    def _bulk(request: Request, session: dict, form: dict) -> Response:
        user = session["user"]
        back = _local(form.get("next"), base)
        action = form.get("action")
        if action not in ("move", "assign", "delete"):
            return RedirectResponse(_with(back, error=f"{name}: choose what to do: move, assign or delete"), 303)
        given = _ids(form)
        if not given:
            return RedirectResponse(_with(back, error=f"{name}: tick the records to {action} first"), 303)
        if len(given) > MAX_BULK:
            return RedirectResponse(_with(back, error=f"{name}: at most {MAX_BULK} records at once"), 303)
        stage = form.get("stage") if isinstance(form.get("stage"), str) else ""
        owner = form.get("owner") if isinstance(form.get("owner"), str) else ""
        if action == "move" and not stage:
            return RedirectResponse(_with(back, error=f"{name}: choose the stage to move the records to"), 303)
        if action == "assign" and not owner:
            return RedirectResponse(_with(back, error=f"{name}: choose the user to assign the records to"), 303)
        ids = [int(i) for i in given if i.isdigit() and len(i) < 19]
        titles = user.titles(name, ids)  # the records the user may read; the others are "not found"
        missing = {i: f"{name} {i} not found" for i in given if not (i.isdigit() and len(i) < 19)}
        if action == "delete" and form.get("confirm") != "1":
            items = [{"id": i, "title": titles.get(int(i)) if i.isdigit() else None} for i in given]
            return render(
                request, "bulk.html", session, ent=ent, step="confirm", items=items, ids=given, back=back, action=action
            )
        results = []
        for raw in given:
            if raw in missing:
                results.append({"id": raw, "title": None, "ok": False, "reason": missing[raw]})
                continue
            rid = int(raw)
            try:
                if action == "move":
                    user.move(name, rid, stage)
                elif action == "assign":
                    user.update(name, rid, {"owner": owner})
                else:
                    user.delete(name, rid)
            except E.MetaCRMError as exc:  # a record the user may not read answers as a missing one
                hidden = rid not in titles or isinstance(exc, E.NotFound)
                reason = f"{name} {rid} not found" if hidden else str(exc)
                results.append({"id": raw, "title": titles.get(rid), "ok": False, "reason": reason})
                continue
            results.append({"id": raw, "title": titles.get(rid), "ok": True, "reason": None})
        done = sum(1 for r in results if r["ok"])
        return render(
            request,
            "bulk.html",
            session,
            ent=ent,
            step="done",
            results=results,
            done=done,
            refused=len(results) - done,
            back=back,
            action=action,
            stage=stage,
            owner=owner,
        )


__all__ = ["Column", "available_columns", "chosen_columns", "compose", "condition", "install", "quote"]
