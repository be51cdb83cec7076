"""The FastAPI application: routes generated per entity of the model, every request acting as
its bearer token's user (docs/http.md).

Handlers are plain functions: FastAPI runs them in its thread pool, where the one shared CRM
object is safe (transactions live in a ContextVar, docs/embedding.md). A request's user is a
view of that object (``crm.as_user``). Bodies are read by async dependencies, which enforce
the size limit and the content type before anything is parsed.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from time import monotonic as clock
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .. import errors as E
from .encode import dumps
from .problems import HTTPProblem, from_error, problem, unique_conflict, unique_issues

log = logging.getLogger("metacrm.web")

API = "/api/v1"
JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Settings:
    max_body: int = 1 << 20  # bytes of a request body
    max_upload: int = 100 << 20  # bytes of a file upload (a field's max_size may be lower)
    max_limit: int = 500  # rows of a page
    default_limit: int = 50
    token_ttl: float = 5.0  # seconds an authenticated token is trusted before it is looked up again


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(dumps(data), status_code=status, media_type=JSON_TYPE, headers=headers)


# -- request ids ---------------------------------------------------------------------------------
class RequestId:
    """Pure ASGI middleware: every response carries ``X-Request-Id`` (the client's, when it
    sent a sane one, else a new one); the 500 handler logs the traceback under it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if 0 < len(given) <= 64 and given.replace("-", "").isalnum() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def sending(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        await self.app(scope, receive, sending)


def route_path(request: Request) -> str:
    """The request's path below the app's ``root_path`` (``/deal/7`` for ``/t/acme/deal/7`` when
    the app serves tenant acme under ``/t/acme``): the app's pages write and read their own
    addresses from the root, metacrm.web.tenants puts them under the prefix."""
    from starlette.routing import get_route_path

    return get_route_path(request.scope)


# -- reads from a replica ------------------------------------------------------------------------
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WROTE_COOKIE = "metacrm_wrote"  # set by a request that wrote: the same browser's next reads use the database
WROTE_SECONDS = 5  # how long (a browser follows the redirect after a POST well within it)


class ReadRouting:
    """Pure ASGI middleware for a CRM with a read replica (docs/scaling.md): every request is
    one ``crm.request()``, so once it wrote its later reads see the write. A request that may
    write (any method but GET, HEAD, OPTIONS) reads the database throughout: what it reads
    decides its write (If-Match, the record it acts on). A request that wrote answers with a
    short-lived cookie, and a GET carrying it reads the database too: the page a form
    redirects to shows what the form saved, whatever the replica's lag."""

    def __init__(self, app, crm):
        self.app = app
        self.crm = crm

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.crm.read_engine is None:
            return await self.app(scope, receive, send)
        from ..runtime.replica import current_request

        safe = scope["method"] in SAFE_METHODS
        cookie = dict(scope["headers"]).get(b"cookie", b"").decode("latin-1")
        primary = not safe or f"{WROTE_COOKIE}=1" in cookie.replace(" ", "").split(";")
        with self.crm.request(), self.crm.primary() if primary else nullcontext():
            request = current_request()

            async def sending(message):
                if message["type"] == "http.response.start" and request is not None and request.wrote:
                    value = f"{WROTE_COOKIE}=1; Max-Age={WROTE_SECONDS}; Path=/; HttpOnly; SameSite=Lax"
                    message.setdefault("headers", []).append((b"set-cookie", value.encode()))
                await send(message)

            await self.app(scope, receive, sending)


# -- acting user ---------------------------------------------------------------------------------
def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def unauthorized(detail: str) -> HTTPProblem:
    return HTTPProblem(
        401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="metacrm", error="invalid_token"'}
    )


class TokenCache:
    """Bearer tokens authenticated in the last ``ttl`` seconds, with the user view each acts as:
    a request with a recently seen token costs no database query. The price, documented in
    docs/http.md: a token revoked (or expired, or its user changed or removed) keeps working for
    at most ``ttl`` seconds in each worker. ``ttl=0`` looks every request up. Only tokens that
    were valid are kept (an unknown token is looked up every time), keyed by their hash."""

    LIMIT = 10_000  # entries; past it the expired ones are dropped, then the oldest

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str):
        if self.ttl <= 0:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= clock():
                self._entries.pop(key, None)
                return None
            return entry[1]

    def put(self, key: str, user) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.LIMIT:
                now = clock()
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                while len(self._entries) >= self.LIMIT:
                    del self._entries[next(iter(self._entries))]
            self._entries[key] = (clock() + self.ttl, user)


def make_acting(crm, settings: Settings | None = None) -> Callable:
    from ..runtime.tokens import authenticate, digest

    cache = TokenCache((settings or Settings()).token_ttl)

    def acting(request: Request):
        """The CRM as the bearer token's user; 401 for no, a bad, a revoked or an expired token."""
        crm._ready()  # 503 before 401 when the database holds another model version
        secret = _bearer(request)
        if secret is None:
            raise unauthorized("send an API token: Authorization: Bearer <token> (metacrm token create LOGIN)")
        key = digest(secret)
        user = cache.get(key)
        if user is not None:
            request.state.user = user  # the error handlers answer as this user (unique conflicts)
            return user
        login = authenticate(crm, secret)
        if login is None:
            raise unauthorized("the token is unknown, revoked or expired")
        try:
            user = crm.as_user(login)
        except E.NotFound:  # the token's user was removed
            raise unauthorized("the token's user no longer exists") from None
        request.state.user = user  # the error handlers answer as this user (unique conflicts)
        cache.put(key, user)
        return user

    return acting


# -- bodies --------------------------------------------------------------------------------------
async def read_body(request: Request, settings: Settings, *types: str) -> bytes:
    """The raw body: 415 for another content type, 413 past the limit (before reading it all)."""
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given not in types:
        raise HTTPProblem(
            415, "unsupported-media-type", f"send {' or '.join(types)} (got {given or 'no content type'})"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_body:
        raise _too_large(settings)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > settings.max_body:
            raise _too_large(settings)
    return bytes(body)


def _too_large(settings: Settings) -> HTTPProblem:
    return HTTPProblem(413, "content-too-large", f"the request body is over {settings.max_body} bytes")


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"), parse_float=_decimal, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise HTTPProblem(400, "bad-json", "the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise HTTPProblem(
            400, "bad-json", f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise HTTPProblem(400, "bad-json", "the body is nested too deeply") from None


def _decimal(text: str):
    from decimal import Decimal

    return Decimal(text)  # money stays exact: 0.1 is 0.1, not 0.1000000000000000055


def _no_constant(name: str):
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def json_object(data: Any, what: str = "the body") -> dict:
    if not isinstance(data, dict):
        raise HTTPProblem(400, "bad-json", f"{what} must be a JSON object")
    return data


# -- paging --------------------------------------------------------------------------------------
def encode_cursor(doc: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> dict:
    try:
        doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        doc = None
    if (
        not isinstance(doc, dict)
        or len(doc) != 1
        or not set(doc) <= {"a", "o"}  # after an id, or an offset (the cursors encode_cursor writes)
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 for v in doc.values())
    ):
        raise HTTPProblem(400, "bad-cursor", "after: not a cursor this API gave (use the `next` link as it is)")
    return doc


def query_params(request: Request) -> dict[str, str]:
    """``p.NAME=value`` query parameters: the values of ``:NAME`` in ``where``."""
    return {k[2:]: v for k, v in request.query_params.items() if k.startswith("p.") and len(k) > 2}


def names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def etag(record: dict) -> dict:
    return {"ETag": f'"{record["version"]}"'} if "version" in record else {}


def if_match(request: Request) -> int | None:
    """The version an ``If-Match`` header names (None without one or for ``*``)."""
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if not value.isdigit() or len(value) > 18:
        raise HTTPProblem(412, "precondition-failed", f"If-Match: {header!r} is not an ETag this API gave")
    return int(value)


# -- the application -----------------------------------------------------------------------------
def build_app(crm, **settings: Any) -> FastAPI:
    from . import apidocs, forms, openapi, pages, routes

    conf = Settings(**settings)
    app = FastAPI(
        title=f"metacrm: {crm.model.label or crm.model.name}",
        version=crm.model.sha256[:12],
        openapi_url=f"{API}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.crm = crm
    app.state.settings = conf
    app.add_middleware(ReadRouting, crm=crm)
    app.add_middleware(RequestId)
    _handlers(app)
    acting = make_acting(crm, conf)
    User = Annotated[Any, Depends(acting)]
    routes.install(app, crm, conf, User)
    forms.install(app, crm, conf)
    openapi.install(app, crm.model)
    apidocs.install(app, app.openapi_url)
    pages.install(app, crm, conf)  # last: its /{entity}/{id} would otherwise catch /api/docs
    return app


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(E.MetaCRMError)
    async def _library(request: Request, exc: E.MetaCRMError):
        from ..runtime.reports import BadReportOption

        if isinstance(exc, BadReportOption):
            return problem(400, "bad-report-option", str(exc))
        user = getattr(request.state, "user", None)
        if user is not None and isinstance(exc, E.ValidationError) and unique_issues(exc):
            from starlette.concurrency import run_in_threadpool

            return await run_in_threadpool(unique_conflict, user, exc)
        return from_error(exc, method=request.method)

    @app.exception_handler(HTTPProblem)
    async def _ours(request: Request, exc: HTTPProblem):
        return problem(exc.status, exc.slug, exc.detail, headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _params(request: Request, exc: RequestValidationError):
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "field": str(e["loc"][-1]) if e.get("loc") else None,
                "message": e.get("msg", ""),
                "type": e.get("type", "invalid"),
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "message": "bad request"}
        where = ".".join(first["loc"])
        return problem(400, "bad-request", f"{where}: {first['message']}" if where else first["message"], errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404:
            detail = f"no such resource: {request.url.path} (GET {API}/model lists the entities)"
        return problem(exc.status_code, kind, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        from ..runtime.engine import translate

        error = translate(exc) if not isinstance(exc, E.MetaCRMError) else exc
        if error is not None:
            return from_error(error, method=request.method)
        rid = request.scope.get("state", {}).get("request_id", "-")
        log.error("request %s %s %s failed", rid, request.method, request.url.path, exc_info=exc)
        return problem(  # answered outside the request-id middleware: the header is set here
            500,
            "internal-error",
            f"an unexpected error; the server's log has it under request id {rid}",
            headers={"X-Request-Id": rid},
            request_id=rid,
        )


__all__ = ["API", "Settings", "build_app", "json_response", "route_path"]
