"""One server for every tenant of a database (``metacrm serve --tenants host|path``, docs/http.md
"Serving many tenants").

:class:`TenantDispatcher` is an ASGI application in front of one app per tenant, each the app
``create_app`` makes for that tenant's CRM (its model from ``tenants.yaml``, else ``--model``).
Every tenant's CRM works on the same engine (PostgreSQL: one pool, the tenant's ``search_path``
set per checkout by metacrm.runtime.tenants), so a thousand tenants cost one pool, not a thousand.

The tenant of a request is

- ``host``: the first label of the Host header (``acme.crm.example.com`` -> ``acme``);
- ``path``: the prefix ``/t/{tenant}``; the tenant's app sees ``root_path = /t/{tenant}`` and its
  own paths below it. Its pages, redirects and cookies are written for the site's root (``href=
  "/deal/7"``, ``Location: /login``, ``Path=/``): :class:`_Prefixed` rewrites them under the
  prefix on the way out, so a page of one tenant only ever links into that tenant, and a
  browser sends a tenant's session cookie to that tenant's paths alone.

An app is made on a tenant's first request and kept. Every request first looks the tenant up in
the registry (one primary-key read; on PostgreSQL through the tenant's engine, so the pooled
connection it uses keeps the tenant's path for the request's own work): a tenant created
while serving is found on its first request, one dropped answers 404 at once. An unknown tenant,
a dropped one and a name that cannot be a tenant get the same 404 problem, so the answer says
nothing about which tenants exist. ``/healthz`` stays global (the database answers, and how many
tenants it lists).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.routing import get_route_path

from ..runtime import tenants as T
from .problems import problem

MODES = ("host", "path")
PREFIX = "/t/"  # path mode: /t/{tenant}/...
UNKNOWN = {
    "host": "no tenant is served at this host name (the first label of the host names the tenant)",
    "path": "no tenant is served at this address (a tenant's pages and API are under /t/{tenant}/)",
}


class TenantDispatcher:
    """The ASGI app serving every tenant of the database ``engine`` opens (see the module's
    docstring). ``models``: a :class:`metacrm.runtime.tenants.TenantMap`; ``model``: the model
    (a path or a Model) of the tenants it does not list; ``read_url``: a streaming replica of the
    database (``serve --read-db``; ``pool_size`` and ``busy_timeout`` apply to its engines as
    to the database's); ``settings``: create_app's."""

    def __init__(
        self,
        engine: Engine,
        mode: str,
        *,
        models: T.TenantMap | None = None,
        model: Any = None,
        read_url: str | None = None,
        pool_size: int | None = None,
        busy_timeout: float | None = None,
        **settings,
    ):
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
        self.engine = T.root(engine)
        T.install(self.engine)
        # serve --read-db: on PostgreSQL one engine (one pool) on the standby, every tenant's CRM
        # reading its schema there; on SQLite each tenant reads its file beside the replica's
        self.read_url = read_url
        self.read_engine: Engine | None = None
        self._replica_options = {"pool_size": pool_size, "busy_timeout": busy_timeout}
        if read_url is not None and self.engine.dialect.name == "postgresql":
            from ..runtime.engine import make_engine

            self.read_engine = make_engine(read_url, pool_size=pool_size)
        self.mode = mode
        self.models = models or T.TenantMap()
        self.model = model
        self.settings = settings
        self._apps: dict[str, Any] = {}
        self._loaded: dict[str, Any] = {}  # model file -> Model (tenants holding one file share it)
        self._lock = threading.Lock()
        self._registry: str | None = None  # PostgreSQL: the schema holding metacrm_tenants

    # -- ASGI ------------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        route = get_route_path(scope)
        if scope["type"] == "http" and route == "/healthz":
            return await self._health(scope, receive, send)
        name, prefix = self._tenant(scope, route)
        app = await run_in_threadpool(self.app_for, name) if name else None
        if app is None:
            if scope["type"] != "http":
                return None  # a websocket to nowhere: closed unanswered
            return await problem(404, "not-found", UNKNOWN[self.mode])(scope, receive, send)
        if not prefix:
            return await app(scope, receive, send)
        root = scope.get("root_path", "") + prefix
        scope = dict(scope, root_path=root)
        if route == prefix:  # /t/acme: the tenant's home, /t/acme/
            scope["path"] = scope["path"] + "/"
            scope["raw_path"] = scope["path"].encode()
        await app(scope, receive, _Prefixed(send, root))

    def _tenant(self, scope, route: str) -> tuple[str | None, str]:
        """(the tenant the request names or None, the path prefix the tenant's app sits under)."""
        if self.mode == "host":
            host = next((v for k, v in scope.get("headers", ()) if k == b"host"), b"").decode("latin-1")
            label = host.split(":")[0].split(".")[0].lower()
            return (label or None), ""
        if not route.startswith(PREFIX):
            return None, ""
        name = route[len(PREFIX) :].split("/", 1)[0]
        return (name or None), f"{PREFIX}{name}"

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _health(self, scope, receive, send) -> None:
        from ..errors import MetaCRMError
        from ..runtime.engine import translate

        try:
            count = await run_in_threadpool(lambda: len(T.names(self.engine)))
        except Exception as exc:  # noqa: BLE001  (the database away: 503 saying why)
            error = exc if isinstance(exc, MetaCRMError) else translate(exc)
            if error is None:
                raise
            response = problem(503, "database-unavailable", str(error))
        else:
            from .app import json_response

            response = json_response({"status": "ok", "tenants": count, "mode": self.mode})
        await response(scope, receive, send)

    # -- the apps ----------------------------------------------------------------------------------
    def app_for(self, name: str):
        """The app of tenant ``name``, made on its first request; None when ``name`` is not a
        tenant of the database (never was, was dropped, or cannot be a name)."""
        try:
            T.check_name(name)
        except Exception:  # noqa: BLE001  (a malformed name answers as an unknown one)
            return None
        if not self._exists(name):
            self._forget(name)
            return None
        app = self._apps.get(name)
        if app is not None:
            return app
        with self._lock:
            app = self._apps.get(name)
            if app is None:
                app = self._apps[name] = self._build(name)
        return app

    def _exists(self, name: str) -> bool:
        """Is ``name`` in the registry? On PostgreSQL read through the tenant's own engine (the
        registry's schema named), so the check costs no change of the connection's path."""
        from sqlalchemy.exc import DBAPIError

        if self.engine.dialect.name != "postgresql":
            return T.exists(self.engine, name)
        if self._registry is None:
            with self.engine.connect() as conn:
                self._registry = conn.execute(text("SELECT current_schema()")).scalar_one()
        quoted = self.engine.dialect.identifier_preparer.quote(self._registry)
        try:
            with T.for_tenant(self.engine, name).connect() as conn:
                found = conn.execute(text(f"SELECT 1 FROM {quoted}.{T.REGISTRY} WHERE name = :n"), {"n": name}).first()
        except DBAPIError as exc:  # no registry yet (undefined table): the database has no tenants
            if getattr(exc.orig, "sqlstate", None) in ("42P01", "3F000"):
                return False
            raise
        return found is not None

    def _build(self, name: str):
        from ..model.loader import load_model
        from ..runtime.crm import CRM
        from . import create_app

        source = self.models.model_for(name, None)
        if source is None:
            source = self.model
        if source is None:
            raise T.SetupError(f"tenant {name!r}: no model (tenants.yaml lists none for it and no --model was given)")
        if isinstance(source, str):
            model = self._loaded.get(source)
            if model is None:
                model = self._loaded[source] = load_model(source)
        else:
            model = source
        engine = T.for_tenant(self.engine, name)
        crm = CRM(model, engine)
        crm._owns_engine = self.engine.dialect.name != "postgresql"  # an SQLite tenant's own engine
        if self.read_url is not None:
            from ..runtime.replica import open_replica

            if self.read_engine is not None:  # the one pool on the standby, the tenant's schema
                crm.read_engine, crm._owns_read_engine = open_replica(engine, self.read_engine)
            else:  # SQLite: the tenant's file beside the replica's, an engine of its own
                crm.read_engine, crm._owns_read_engine = open_replica(engine, self.read_url, **self._replica_options)
        return create_app(crm, **self.settings)

    def _forget(self, name: str) -> None:
        with self._lock:
            app = self._apps.pop(name, None)
        if app is not None:
            app.state.crm.close()  # SQLite: its file is gone, let go of its connections (PostgreSQL: nothing)

    def close(self) -> None:
        """Let go of every tenant's app and of the engines."""
        with self._lock:
            apps, self._apps = list(self._apps.values()), {}
        for app in apps:
            app.state.crm.close()
        if self.read_engine is not None:
            self.read_engine.dispose()
        self.engine.dispose()


# -- path mode: the app's own URLs under /t/{tenant} ---------------------------------------------------
_ATTRS = re.compile(rb'(\s(?:href|src|action|formaction|hx-get|hx-post|hx-put|hx-patch|hx-delete)=")(/[^"]*)"')
_COOKIE_PATH = re.compile(r"(;\s*[Pp]ath=)(/[^;]*)")
_LOCATIONS = (b"location", b"hx-redirect", b"hx-location", b"content-location")


class _Prefixed:
    """The ``send`` of a tenant's app served under ``root`` (``/t/acme``): a local URL the app
    wrote for the site's root (``/deal/7``) is put under ``root`` in redirects (Location,
    HX-Redirect), cookies' Path and the links, forms, scripts and htmx addresses of HTML pages.
    A URL already under ``root`` (the API docs page writes its own) and another site's
    (``//host``, ``https://``) are left alone."""

    def __init__(self, send, root: str):
        self.send = send
        self.root = root
        self._start: dict | None = None
        self._body = bytearray()

    def local(self, url: str) -> str:
        if not url.startswith("/") or url.startswith("//"):
            return url
        if url == self.root or url.startswith((self.root + "/", self.root + "?")):
            return url
        return self.root + url

    def _header(self, key: bytes, value: bytes) -> bytes:
        if key in _LOCATIONS:
            return self.local(value.decode("latin-1")).encode("latin-1")
        if key == b"set-cookie":
            cookie = value.decode("latin-1")
            return _COOKIE_PATH.sub(lambda m: m.group(1) + self.local(m.group(2)), cookie).encode("latin-1")
        return value

    async def __call__(self, message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, self._header(k, v)) for k, v in message.get("headers", [])]
            message = dict(message, headers=headers)
            kind = next((v for k, v in headers if k == b"content-type"), b"")
            if kind.startswith(b"text/html"):
                self._start = message  # held until the whole page is read and rewritten
                return
            return await self.send(message)
        if message["type"] == "http.response.body" and self._start is not None:
            self._body += message.get("body", b"")
            if message.get("more_body", False):
                return
            if not self._body:  # HEAD (or an empty page): the headers as they were
                await self.send(self._start)
                self._start = None
                return await self.send(message)
            root = self.root.encode("latin-1")

            def under(match: re.Match) -> bytes:
                url = match.group(2)
                if url == root or url.startswith((root + b"/", root + b"?")) or url.startswith(b"//"):
                    return match.group(0)
                return match.group(1) + root + url + b'"'

            page = _ATTRS.sub(under, bytes(self._body))
            headers = [(k, v) for k, v in self._start["headers"] if k != b"content-length"]
            headers.append((b"content-length", str(len(page)).encode()))
            await self.send(dict(self._start, headers=headers))
            self._start = None
            return await self.send({"type": "http.response.body", "body": page, "more_body": False})
        return await self.send(message)


__all__ = ["MODES", "TenantDispatcher"]
