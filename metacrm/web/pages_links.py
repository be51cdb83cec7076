"""A record card's links, both ways (docs/web.md#links-on-a-card), and error pages for the browser.

On a card each link of the record (single, many, polymorphic) and each inverse list (a client's
deals) is a block: the linked records' titles linking to their cards, a remove button on each,
and an add control (a search over the target's ``search`` fields filling a select through the
target's ``/{entity}/options``; for a polymorphic link a select of its target entities first).

``POST /{entity}/{id}/link`` and ``POST /{entity}/{id}/unlink`` (``name``: the link or inverse,
``target``: the other record's id, ``entity:id`` for a polymorphic link) call the library's
``link`` / ``unlink`` as the signed-in user; on an inverse the library links the other record to
this one. A refusal is shown in the block with the library's text; a target the user may not
read answers as a missing one. htmx swaps the block in place (the answer is the block); without
JavaScript the form posts and the browser is sent back to the card (``303``), where the refusal
is shown in the same place. Without JavaScript, an add form sent with search text but no record
comes back with the select filled with the matches (``?find=NAME&q=...``).

Error pages: outside ``/api/``, ``/forms/``, ``/healthz`` and ``/static/`` a refusal of FastAPI
or the app's handlers (a non-number id, an unknown address, a method not allowed, a body too
big, the database away) is an HTML page, never a JSON problem document; a path value that does
not parse (``/deal/abc``) answers 404 as a missing record does.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from .. import errors as E
from ..model.metamodel import Entity, Link
from ..runtime.access import scope
from .app import route_path

OPTIONS_LIMIT = 200  # records offered in a select, as the forms do
NOT_PAGES = ("/api/", "/forms/", "/static/")  # these answer problem documents
REFUSALS = (E.ValidationError, E.ConflictError, E.NotFound, E.PermissionDenied, E.TransitionError)


def install(app: FastAPI, router: APIRouter, crm, entities, signed_in, check_csrf, posted, render, pages) -> None:
    _error_pages(app, render, signed_in)
    for ent in entities:
        if ent.links or ent.inverses:
            _link_routes(router, crm, ent, signed_in, check_csrf, posted, render, pages)


# -- the blocks of a card -------------------------------------------------------------------------
def blocks(request: Request, user, ent: Entity, card: dict, only: str | None = None) -> list[dict]:
    """What the card shows per link and inverse list (``only``: that one): its items, whether the
    user may change it, the add control's target entities and, after a search without
    JavaScript (``?find=NAME&q=...``), the matches to choose from."""
    model = user.model
    rid = card["record"]["id"]
    params = request.query_params
    out = []

    def may(entity: str, action: str, record: dict | None = None) -> bool:
        """Whether the controls are shown (the library decides what is done)."""
        granted = scope(model, user.actor, entity, action)
        if granted == "own" and record is not None and ent.owner:
            return record.get("owner") == user.actor.login
        return granted != "none"

    for link in ent.links.values():
        if only not in (None, link.name):
            continue
        value = card["links"][link.name]
        out.append(
            {
                "name": link.name,
                "label": link.caption,
                "inverse": False,
                "many": link.many,
                "polymorphic": link.polymorphic,
                "targets": [model.entities[t] for t in link.targets],
                "items": value if isinstance(value, list) else ([] if value is None else [value]),
                "editable": may(ent.name, "update", card["record"]),
                "new_url": None,
                "fields": list(link.fields.values()),  # a link's own fields: shown per item, asked when adding
            }
        )
    names = [inv.source for inv in ent.inverses.values()]
    for name, inv in ent.inverses.items():
        if only not in (None, name):
            continue
        source = model.entities[inv.source]
        back = f"{ent.name}:{rid}" if source.links[inv.link].polymorphic else str(rid)
        label = source.plural or source.caption
        if names.count(inv.source) > 1:  # two links of one entity point here: say which
            label = f"{label} ({source.links[inv.link].caption})"
        out.append(
            {
                "name": name,
                "label": label,
                "inverse": True,
                "many": True,
                "polymorphic": False,
                "targets": [source],
                "items": card["related"].get(name, []),
                "editable": may(inv.source, "update"),
                "new_url": f"/{inv.source}/new?{inv.link}={back}",
                "new_caption": source.caption,
                "fields": [],
            }
        )
    for block in out:
        targets = [t.name for t in block["targets"]]
        chosen = params.get("entity") if params.get("find") == block["name"] else None
        block["entity"] = chosen if chosen in targets else targets[0]
        block["q"] = ""
        block["options"] = []
        block["error"] = params.get("link_error") if params.get("link") == block["name"] else None
        if params.get("find") == block["name"] and block["editable"]:
            block["q"] = (params.get("q") or "").strip()[:200]
            block["options"] = _matches(user, model.entities[block["entity"]], block["q"], block["polymorphic"])
    return out


def _matches(user, target: Entity, q: str, polymorphic: bool) -> list[tuple[str, str]]:
    """(value, title) of the records of ``target`` matching ``q`` that the user may read."""
    try:
        if q and target.search:
            ids = [hit["id"] for hit in user.search(q, entity=target.name, limit=OPTIONS_LIMIT)]
        else:
            ids = [r["id"] for r in user.find(target.name, limit=OPTIONS_LIMIT)]
    except E.ValidationError:  # text without a word: no hits
        ids = []
    titles = user.titles(target.name, ids)
    prefix = f"{target.name}:" if polymorphic else ""
    return [(f"{prefix}{i}", titles[i]) for i in ids if i in titles]


def poly_options(user, link: Link, value: Any) -> dict:
    """A polymorphic link's picker in a form: the entity chosen (the value's, else the first
    target) and its first records as ``entity:id`` options, the chosen record kept first."""
    given = value[-1] if isinstance(value, list) and value else value
    entity, _, rid = (given or "").partition(":") if isinstance(given, str) else ("", "", "")
    entity = entity.strip()
    chosen = entity if entity in link.targets else link.targets[0]
    options = _matches(user, user.model.entities[chosen], "", True)
    if entity == chosen and rid.strip().isdigit() and f"{chosen}:{int(rid)}" not in {v for v, _ in options}:
        titles = user.titles(chosen, [int(rid)])
        if int(rid) in titles:
            options.insert(0, (f"{chosen}:{int(rid)}", titles[int(rid)]))
    return {"entity": chosen, "options": options}


# -- link and unlink ---------------------------------------------------------------------------------
def _link_routes(router: APIRouter, crm, ent: Entity, signed_in, check_csrf, posted, render, pages) -> None:
    base = f"/{ent.name}"

    def text(form: dict, key: str) -> str:
        value = form.get(key)
        return value[-1] if isinstance(value, list) and value else value if isinstance(value, str) else ""

    async def relink(request: Request, record_id: int, *, add: bool) -> Response:
        form = await posted(request)
        session = await run_in_threadpool(signed_in, request)
        check_csrf(request, session, form)
        htmx = request.headers.get("hx-request") == "true"
        name = text(form, "name")

        @pages
        def attempt() -> Response:
            user = session["user"]
            if name not in ent.links and name not in ent.inverses:
                from .pages import Refused

                known = ", ".join([*ent.links, *ent.inverses]) or "none"
                raise Refused(400, f"{ent.name} has no link '{name[:60]}'; links: {known}")
            record = user.get(ent.name, record_id)  # a hidden or missing record: the 404 page
            card_url = f"{base}/{record['id']}"
            raw = text(form, "target").strip()
            link = ent.links.get(name)
            polymorphic = link is not None and link.polymorphic
            message = None
            if add and not raw:  # a search sent without a record chosen
                q = text(form, "q").strip()
                if not htmx:
                    query = {"find": name, "q": q}
                    if polymorphic and text(form, "entity"):
                        query["entity"] = text(form, "entity")
                    return RedirectResponse(f"{card_url}?{urlencode(query)}#links-{name}", 303)
                message = "choose a record to link"
            else:
                try:
                    target = _target(raw, polymorphic) if raw else None
                    if add:  # the link's fields typed next to the record chosen
                        fields = link.fields if link is not None else ()
                        values = {f: text(form, f"link.{f}").strip() for f in fields}
                        values = {f: v for f, v in values.items() if v}
                        user.link(ent.name, record["id"], name, target, values=values or None)
                    else:
                        user.unlink(ent.name, record["id"], name, target)
                except REFUSALS as exc:
                    message = _visible(user, exc)
            if htmx:
                card = user.card(ent.name, record["id"])
                block = blocks(request, user, ent, card, only=name)[0]
                block["error"] = message
                return render(request, "card_link.html", session, ent=ent, record=card["record"], b=block)
            query = f"?{urlencode({'link': name, 'link_error': message})}" if message else ""
            return RedirectResponse(f"{card_url}{query}#links-{name}", 303)

        return await run_in_threadpool(attempt)

    @router.post(f"{base}/{{record_id}}/link")
    async def link(request: Request, record_id: int) -> Response:
        return await relink(request, record_id, add=True)

    @router.post(f"{base}/{{record_id}}/unlink")
    async def unlink(request: Request, record_id: int) -> Response:
        return await relink(request, record_id, add=False)


def _target(raw: str, polymorphic: bool):
    """The other record as the library takes it: an id, or ``{"entity", "id"}``."""
    if polymorphic:
        entity, _, rid = raw.partition(":")
        rid = rid.strip()
        return {"entity": entity.strip(), "id": int(rid) if rid.isdigit() and len(rid) < 19 else rid}
    return int(raw) if raw.isdigit() and len(raw) < 19 else raw


def _visible(user, exc: E.MetaCRMError) -> str:
    """The library's refusal as the user may read it: a record the user may not read is refused
    as a missing one ("deal 7 not found"), never as a permission."""
    if isinstance(exc, E.PermissionDenied) and exc.entity and exc.record_id is not None:
        if exc.entity in user.model.entities and not user.titles(exc.entity, [exc.record_id]):
            return f"{exc.entity} {exc.record_id} not found"
    return str(exc)


# -- error pages --------------------------------------------------------------------------------------
def _is_page(request: Request) -> bool:
    path = route_path(request)
    return not (path == "/api" or path.startswith(NOT_PAGES) or path == "/healthz")


def _error_pages(app: FastAPI, render, signed_in) -> None:
    """Outside the API, the app's refusals are HTML pages (the API's handlers answer the rest)."""

    async def page(request: Request, status: int, message: str, headers: dict | None = None) -> Response:
        session = None
        try:
            session = await run_in_threadpool(signed_in, request)
        except Exception:  # noqa: BLE001  (no session, the database away: the page is shown without one)
            session = None
        response = render(request, "error.html", session, status, message=message, code=status)
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    def wrap(kind: type) -> None:
        original = app.exception_handlers.get(kind)
        if original is None:
            return

        async def handler(request: Request, exc: Exception) -> Response:
            if not _is_page(request):
                return await original(request, exc)
            if isinstance(exc, RequestValidationError):
                errors = exc.errors()
                bad = next((e for e in errors if tuple(e.get("loc", ()))[:1] == ("path",)), None)
                if bad is not None:  # /deal/abc: as a missing record
                    entity = route_path(request).strip("/").split("/")[0]
                    return await page(request, 404, f"{entity} {str(bad.get('input', ''))[:60]} not found")
                first = errors[0] if errors else {}
                where = ".".join(str(p) for p in first.get("loc", ())[1:])
                return await page(request, 400, f"{where}: {first.get('msg', 'bad request')}".lstrip(": "))
            if isinstance(exc, StarletteHTTPException) and exc.status_code == 404:
                return await page(request, 404, f"no page at {request.url.path[:200]}")
            response = await original(request, exc)
            try:
                detail = json.loads(bytes(response.body))["detail"]
            except (ValueError, KeyError, TypeError):
                return response
            kept = {k: v for k, v in response.headers.items() if k in ("retry-after", "x-request-id", "allow")}
            return await page(request, response.status_code, str(detail), kept)

        app.add_exception_handler(kind, handler)

    for kind in (RequestValidationError, StarletteHTTPException, E.MetaCRMError, Exception):
        wrap(kind)
    from .app import HTTPProblem

    wrap(HTTPProblem)


__all__ = ["blocks", "install", "poly_options"]
