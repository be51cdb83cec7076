"""Inbound requests over HTTP (docs/forms.md): ``POST /forms/{name}`` takes a submission as JSON
or ``application/x-www-form-urlencoded``; ``GET /forms/{name}`` serves the embeddable HTML form.

A public form needs no token. Its anonymous sender learns nothing about the database: a new
record, a repeat of an existing one (a note is added to it) and a submission dropped as spam
(the honeypot filled) all answer the same ``200 {"status": "received"}`` — a bot cannot tell
that its spam was dropped, and nobody can probe which phones or e-mails are clients. A
token-bound form (a telephony or mail gateway) needs a bearer token and answers the full result:
``201 {"status": "created", "id", ...}`` or ``200 {"status": "duplicate", "id", ...}``.

Refusals are problem documents: 401 (token-bound form without a valid token), 404 (unknown
form; a token-bound one for GET), 413 (body over ``max_body``), 415 (another content type),
422 (a field the form does not take, a bad value), 429 with ``Retry-After`` (over the form's
rate from one address: counted per server process).
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .. import errors as E
from .app import (
    JSON_TYPE,
    HTTPProblem,
    Settings,
    _bearer,
    json_object,
    json_response,
    parse_json,
    read_body,
    unauthorized,
)
from .problems import problem

FORM_TYPE = "application/x-www-form-urlencoded"
RECEIVED = {"status": "received"}


def parse_urlencoded(body: bytes) -> dict:
    """A urlencoded body as a dict: a name given once is a string, several times a list (a
    multichoice)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPProblem(400, "bad-request", "the body is not UTF-8") from None
    try:
        pairs = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=1000)
    except ValueError as exc:
        raise HTTPProblem(400, "bad-request", f"the body is not a urlencoded form: {exc}") from None
    return {k: v[0] if len(v) == 1 else v for k, v in pairs.items()}


def install(app: FastAPI, crm, conf: Settings) -> None:
    from ..runtime.tokens import authenticate

    router = APIRouter(prefix="/forms", tags=["forms"])

    def lookup(name: str, *, public: bool = False):
        """The form; 404 alike for an unknown one and (``public``) a token-bound one: an
        anonymous caller learns no names."""
        crm._ready()  # 503 before anything else when the database holds another model version
        form = crm.model.forms.get(name)
        if form is None or (public and form.token):
            raise HTTPProblem(404, "not-found", f"no public form '{name}' here")
        return form

    @router.post("/{name}", operation_id="submit_form")
    async def submit(request: Request, name: str) -> Response:
        form = await run_in_threadpool(lookup, name)
        authenticated = False
        if form.token:
            secret = _bearer(request)
            if secret is None:
                raise unauthorized(f"form '{form.name}' is token-bound: send Authorization: Bearer <token>")
            if await run_in_threadpool(authenticate, crm, secret) is None:
                raise unauthorized("the token is unknown, revoked or expired")
            authenticated = True
        body = await read_body(request, conf, JSON_TYPE, FORM_TYPE)
        is_json = request.headers.get("content-type", "").split(";")[0].strip().lower() == JSON_TYPE
        if is_json:
            data = json_object(parse_json(body))
        else:
            data = parse_urlencoded(body)
        ip = request.client.host if request.client else None
        # a browser posting the HTML form goes on to the form's `redirect`
        received = RedirectResponse(form.redirect, 303) if form.redirect and not is_json else json_response(RECEIVED)
        try:
            result = await run_in_threadpool(
                crm.submit_form, form.name, data, source_ip=ip, authenticated=authenticated
            )
        except E.SpamError:
            return received  # looks accepted: the bot learns nothing
        except E.RateLimited as exc:
            return problem(429, "rate-limited", str(exc), headers={"Retry-After": str(exc.retry_after)})
        if not form.token:
            return received
        return json_response(result, 201 if result["status"] == "created" else 200)

    @router.get("/{name}", operation_id="form_html")
    def page(request: Request, name: str) -> Response:
        form = lookup(name, public=True)
        action = str(request.url.replace(query="", fragment=""))  # the form posts back where it was fetched
        text = crm.form_html(form.name, action)
        document = (
            '<!doctype html>\n<html><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_escape(form.caption)}</title></head><body>\n{text}</body></html>\n"
        )
        return HTMLResponse(document)

    app.include_router(router)


def _escape(text: str) -> str:
    import html

    return html.escape(text)


__all__ = ["FORM_TYPE", "install", "parse_urlencoded"]
