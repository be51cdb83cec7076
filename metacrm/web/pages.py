"""The CRM in a browser (docs/web.md): server-rendered pages generated from the model, next to
the API (which stays under ``/api/v1``).

Every page acts as the signed-in user (``crm.as_user``), so roles and row-level access apply
exactly as in the library. A session is a random cookie (HttpOnly, SameSite=Lax, Secure over
https) whose hash the database keeps with the login, a CSRF token and an absolute expiry
(runtime/passwords.py). Every state-changing request carries the session's CSRF token (a hidden
``csrf`` input, or the ``X-CSRF-Token`` header htmx and the board's script send): without it
the answer is 403. Failed sign-ins lock the login and the address out for a growing time.

Addresses (part of the contract): ``/`` home, ``/login``, ``/logout``, ``/settings``, ``/{entity}`` list,
``/{entity}/new``, ``/{entity}/{id}`` card, ``/{entity}/{id}/edit``, ``/{entity}/board``,
``/{entity}/import`` (pages_import.py), the list's ``/{entity}/columns``, ``/{entity}/filter``,
``/{entity}/export.csv`` and ``/{entity}/bulk`` (pages_list.py).

The interface's words, numbers, money and dates follow the user's language and times their time
zone (i18n.py): ``signed_in`` chooses them for the request, ``render`` renders in them.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations

import datetime as dt
import functools
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from .. import errors as E
from ..model.colors import badge
from ..model.field_types import MULTI_VALUE_TYPES
from ..model.metamodel import Entity, Field, Link
from ..runtime.access import scope
from . import i18n, pages_import, pages_links, pages_list, pages_reports
from .app import HTTPProblem, Settings, decode_cursor, encode_cursor, read_body, route_path
from .forms import FORM_TYPE, parse_urlencoded
from .i18n import N_, _

# the timeline's actions (runtime.journal.ACTIONS; its kinds are words of the card's note form)
N_("create"), N_("update"), N_("delete"), N_("move"), N_("link"), N_("unlink"), N_("archive"), N_("restore")
N_("purge"), N_("attach"), N_("detach")

HERE = Path(__file__).parent
SESSION_COOKIE = "metacrm_session"
LOGIN_CSRF_COOKIE = "metacrm_login_csrf"
PAGE_SIZE = 50
# A list counts its records up to COUNT_CAP and says "10,000+" beyond: an exact count reads every
# matching record (all of a 100,000-row table: tens of ms on PostgreSQL, which keeps no row
# count), a capped one stops after COUNT_CAP + 1 rows (as Datasette and Frappe do; docs/web.md).
COUNT_CAP = 10_000
OPTIONS_LIMIT = 200  # records offered in a link's select
INPUT_TYPES = {
    "string": "text",
    "email": "email",
    "phone": "tel",
    "url": "url",
    "integer": "number",
    "date": "date",
    "datetime": "datetime-local",
}
DECIMALS = ("money", "currency", "decimal", "percent")
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}


class LoginRequired(Exception):
    """No live session: the browser goes to the sign-in page."""


class Refused(Exception):
    """A page answered with an error page (403 without the CSRF token, 404 for a hidden record)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# -- failed sign-ins ------------------------------------------------------------------------------
class Throttle:
    """Failed sign-ins per key (a login, an address), in this process: after ``free`` failures
    each further one locks the key out for ``base`` seconds, doubling up to ``cap``. A success
    clears the login's count (the address keeps its own)."""

    LIMIT = 10_000

    def __init__(
        self, free: int = 5, base: float = 1.0, cap: float = 900.0, clock: Callable[[], float] = time.monotonic
    ):
        self.free, self.base, self.cap, self.clock = free, base, cap, clock
        self._keys: dict[str, tuple[int, float]] = {}  # key -> (failures, locked until)
        self._lock = threading.Lock()

    def wait(self, *keys: str) -> float:
        """Seconds until every key may try again (0: now)."""
        now = self.clock()
        with self._lock:
            return max([0.0, *(self._keys.get(k, (0, 0.0))[1] - now for k in keys)])

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._keys) >= self.LIMIT:  # the oldest go first
                for key in list(self._keys)[: self.LIMIT // 10]:
                    del self._keys[key]
            for key in keys:
                count = self._keys.pop(key, (0, 0.0))[0] + 1
                over = count - self.free
                until = now + min(self.cap, self.base * 2 ** (over - 1)) if over > 0 else 0.0
                self._keys[key] = (count, until)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)


# -- values shown and read ---------------------------------------------------------------------------
def shown(value: Any, field: Field | None = None, record: dict | None = None) -> str:
    """A value as the page shows it, in the language of the request (i18n.current()): labels for
    choices (a colored option as a badge), numbers and money with the locale's separators, a
    currency amount with its currency (the field's, or the one its ``record`` names; a report
    row's ``currency``), durations as 1h 30m, dates in its words, datetimes in the user's time
    zone."""
    if value is None:
        return ""
    if field is not None and field.type == "rich_text" and isinstance(value, str):
        from markupsafe import Markup

        from ..validation.values import sanitise_html

        return Markup(sanitise_html(value))  # sanitised when stored; again here, whatever wrote it
    lang = i18n.current()
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if field is not None and field.kind == "file":
        return "📎"  # a file is attached (the card names it and links to it)
    if field is not None and field.options:
        if isinstance(value, list):
            return Markup(", ").join(_option(field, v) for v in value)
        return _option(field, value)
    if field is not None and field.type == "currency" and isinstance(value, Decimal | int):
        row = record or {}
        code = field.currency or row.get(field.currency_field) or row.get("currency")
        return lang.money(value, code) if code else lang.number(value)
    if field is not None and field.type == "duration" and isinstance(value, int):
        from ..dates import format_duration

        return format_duration(value)
    if isinstance(value, dt.datetime):
        return lang.moment(value)
    if isinstance(value, dt.date):
        return lang.date(value)
    if field is not None and field.type == "money" and isinstance(value, Decimal | int | float):
        return lang.money(value, getattr(field, "currency", None))
    if isinstance(value, Decimal | float) or (isinstance(value, int) and field is not None):
        return lang.number(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _option(field: Field, value) -> str:
    """A choice option by its label; with a ``color``, a badge (its ink black or white, whichever
    contrasts more: metacrm.model.colors)."""
    option = next((o for o in field.options if o.value == value), None)
    label = (option.label or option.value) if option is not None else str(value)
    colors = badge(option.color) if option is not None and option.color else None
    if colors is None:
        return label
    background, ink = colors
    return Markup('<span class="badge" style="background:{};color:{}">{}</span>').format(background, ink, label)


def amount_text(value: Any, field: Field | None, sums: dict | None = None, currency: str | None = None) -> str:
    """A report's amount: the one sum, or with ``sums`` (a currency field's sums per currency)
    every non-zero one on a line (``1 200 ¥ · 11,55 $``), never added together."""
    if sums and (value is None or len(sums) > 1):
        lang = i18n.current()
        shown_sums = [(code, v) for code, v in sums.items() if v]
        return " · ".join(lang.money(v, code) if code else lang.number(v) for code, v in shown_sums) or lang.number(0)
    return shown(value, field, {"currency": currency} if currency else None)


def card_fields(ent: Entity, record: dict) -> list[tuple[str, str, str]]:
    """(caption, name, text) of each field as the card shows it: a composite field (address,
    person_name) once, on one line, in the place of its first part."""
    rows = []
    for f in ent.fields.values():
        if f.text_of:  # the plain text of a rich_text field: the card shows the formatted one
            continue
        if f.part_of is None:
            rows.append((f.label or f.name, f.name, shown(record.get(f.name), f, record)))
            continue
        composite = ent.composites[f.part_of]
        if composite.parts[0][1] == f.name:
            rows.append((composite.label or composite.name, composite.name, composite.one_line(record) or ""))
    return rows


def input_value(value: Any, field: Field) -> Any:
    """A stored value as a form input holds it (a datetime in the user's time zone, a decimal with
    the locale's decimal sign)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return i18n.current().local_input(value)
    if isinstance(value, Decimal):
        return i18n.current().decimal_input(value)
    if field.type == "duration" and isinstance(value, int):
        from ..dates import format_duration

        return format_duration(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if field.type == "tags" and isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if field.type in MULTI_VALUE_TYPES and isinstance(value, list):
        return "\n".join(str(v) for v in value)  # one address / number a line, the primary first
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value)


def editable(ent: Entity) -> list[Field]:
    """The fields a user's form edits: not the computed, nor the readonly ones (docs/sysfields.md),
    nor file fields (the card's files section attaches them)."""
    return [f for f in ent.fields.values() if not f.formula and not f.rollup and not f.readonly and f.kind != "file"]


def form_values(ent: Entity, form: dict, *, creating: bool, lang: i18n.Lang | None = None) -> dict:
    """The record a submitted form describes: blank inputs are left out on create (defaults
    apply) and clear the value on edit; a datetime-local input is the user's wall-clock time
    (``lang``'s zone), sent on with its offset; the library converts and checks the rest."""
    lang = lang or i18n.current()
    data: dict[str, Any] = {}
    for field in editable(ent):
        if field.type in ("multichoice", "users"):
            given = form.get(field.name, [])
            data[field.name] = [v for v in ([given] if isinstance(given, str) else given) if v]
            continue
        value = form.get(field.name)
        if isinstance(value, list):
            value = value[-1]
        if value is None:
            continue
        if value.strip() == "":
            if not creating:
                data[field.name] = None
            continue
        data[field.name] = lang.from_local_input(value) if field.type == "datetime" else value
    for link in ent.links.values():
        given = form.get(link.name)
        if link.many:
            items = [given] if isinstance(given, str) else (given or [])
            data[link.name] = [int(v) if v.isdigit() else v for v in items if v]
            continue
        if isinstance(given, list):
            given = given[-1]
        if given is None:
            continue
        if not given.strip():
            if not creating:
                data[link.name] = None
            continue
        if link.polymorphic:
            target, _, rid = given.partition(":")
            data[link.name] = {"entity": target.strip(), "id": int(rid) if rid.strip().isdigit() else rid.strip()}
        else:
            data[link.name] = int(given) if given.isdigit() else given
    return data


def _safe_next(target: str | None, default: str) -> str:
    """A local address to go on to (never another site)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


# -- the application ----------------------------------------------------------------------------------
def install(app: FastAPI, crm, conf: Settings) -> None:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from ..runtime import passwords
    from ..runtime.preferences import preferences, set_preference

    ttl = float(os.environ.get("METACRM_SESSION_TTL") or passwords.SESSION_TTL)
    throttle = Throttle()
    app.state.throttle = throttle  # tests replace its clock
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    # the interface's words, {{ _("New") }}, in the language of the request (i18n.use)
    env.install_gettext_callables(
        lambda message: i18n.current().gettext(message),
        lambda singular, plural, n: i18n.current().ngettext(singular, plural, n),
        newstyle=True,
    )
    env.globals["shown"] = shown
    env.globals["amount_text"] = amount_text
    env.globals["card_fields"] = card_fields
    env.globals["number"] = lambda value, digits=None: i18n.current().number(value, digits)
    env.globals["may"] = lambda session, entity, action: (
        scope(crm.model, session["user"].actor, entity, action) != "none"
    )
    model = crm.model
    entities = list(model.entities.values())
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    router = APIRouter(include_in_schema=False)

    # -- sessions ----------------------------------------------------------------------------------
    def signed_in(request: Request) -> dict:
        """The session (``login``, ``csrf``, ``user``: the CRM as its user), or LoginRequired."""
        crm._ready()
        session = passwords.find_session(crm, request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise LoginRequired()
        try:
            session["user"] = crm.as_user(session["login"])
        except E.NotFound:  # the user was removed
            raise LoginRequired() from None
        session["lang"] = i18n.choose(model, preferences(session["user"]), request.headers.get("accept-language"))
        i18n.use(session["lang"])  # for the rest of this handler (a sync one runs in this context)
        return session

    def browser_lang(request: Request) -> i18n.Lang:
        """The language before sign-in: the browser's."""
        return i18n.choose(model, None, request.headers.get("accept-language"))

    def check_csrf(request: Request, session: dict, form: dict) -> None:
        given = request.headers.get("x-csrf-token") or form.get("csrf") or ""
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), session["csrf"].encode()):
            raise Refused(
                403,
                session["lang"].gettext(
                    "the form is stale or came from elsewhere (no valid CSRF token): reload the page"
                ),
            )

    async def posted(request: Request) -> dict:
        if not request.headers.get("content-type") and request.headers.get("content-length", "0") == "0":
            return {}  # a bare POST (a button without inputs): then the CSRF check answers
        return parse_urlencoded(await read_body(request, conf, FORM_TYPE))

    def render(request: Request, template: str, session: dict | None, status: int = 200, **context) -> HTMLResponse:
        lang = session.get("lang") if session else None
        with i18n.using(lang or browser_lang(request)) as lang:
            text = env.get_template(template).render(
                request=request,
                session=session,
                csrf=session["csrf"] if session else None,
                model=model,
                entities=entities,
                error=request.query_params.get("error"),
                lang=lang,
                **context,
            )
        return HTMLResponse(text, status, headers=SECURITY_HEADERS)

    def pages(fn):
        """A page handler: library refusals of a hidden or missing record become error pages."""

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except E.NotFound as exc:
                raise Refused(404, str(exc)) from None
            except E.PermissionDenied as exc:
                if exc.record_id is not None and exc.entity:  # a hidden record answers as an absent one
                    raise Refused(404, f"{exc.entity} {exc.record_id} not found") from None
                raise Refused(403, str(exc)) from None

        return wrapped

    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        target = "/login?" + urlencode(
            {"next": route_path(request) + (f"?{request.url.query}" if request.url.query else "")}
        )
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": target})
        return RedirectResponse(target, 303)

    async def _refused(request: Request, exc: Refused) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"ok": False, "reason": str(exc)}, exc.status)
        session = None
        try:
            session = await run_in_threadpool(signed_in, request)
        except (LoginRequired, E.MetaCRMError):
            pass
        return render(request, "error.html", session, exc.status, message=str(exc), code=exc.status)

    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(Refused, _refused)

    # -- sign-in -----------------------------------------------------------------------------------
    def login_page(request: Request, status: int = 200, message: str | None = None, login: str = "") -> Response:
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
        response = render(
            request,
            "login.html",
            None,
            status,
            login_csrf=token,
            message=message,
            login=login,
            next=_safe_next(request.query_params.get("next"), "/"),
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE, token, httponly=True, samesite="lax", secure=request.url.scheme == "https", path="/login"
        )
        return response

    @router.get("/login")
    def login_form(request: Request) -> Response:
        return login_page(request)

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await posted(request)
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        given = form.get("csrf", "")
        if not cookie or not isinstance(given, str) or not hmac.compare_digest(cookie.encode(), given.encode()):
            raise Refused(
                403, browser_lang(request).gettext("the sign-in form is stale (no valid CSRF token): reload the page")
            )
        lang = browser_lang(request)
        name = form.get("login", "")
        password = form.get("password", "")
        if not isinstance(name, str) or not isinstance(password, str):
            return login_page(request, 400, lang.gettext("send one login and one password"), "")
        name = name.strip()
        address = request.client.host if request.client else "-"
        keys = (f"login:{name}", f"address:{address}")
        wait = throttle.wait(*keys)
        if wait > 0:
            message = lang.gettext("too many failed sign-ins: try again in %(seconds)d s", seconds=int(wait) + 1)
            response = login_page(request, 429, message, name)
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        if not await run_in_threadpool(passwords.verify_password, crm, name, password):
            throttle.failed(*keys)
            return login_page(request, 401, lang.gettext("wrong login or password"), name)
        throttle.succeeded(keys[0])
        session = await run_in_threadpool(passwords.start_session, crm, name, ttl)
        response = RedirectResponse(
            _safe_next(form.get("next") if isinstance(form.get("next"), str) else None, "/"), 303
        )
        response.set_cookie(
            SESSION_COOKIE,
            session["secret"],
            max_age=int(ttl),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        form = await posted(request)
        session = await run_in_threadpool(signed_in, request)
        check_csrf(request, session, form)
        await run_in_threadpool(passwords.end_session, crm, request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @router.get("/")
    @pages
    def home(request: Request) -> Response:
        session = signed_in(request)
        user = session["user"]
        tasks = user.tasks(for_user=session["login"], limit=50) if user.task_entities() else []
        return render(request, "home.html", session, tasks=tasks)

    # -- the user's settings: language and time zone ------------------------------------------------
    def settings_form(request: Request, session: dict, locale: str, zone: str, status: int = 200, **context):
        default_zone = i18n.zone(getattr(model, "timezone", None))
        zones = list(i18n.COMMON_ZONES)
        return render(
            request,
            "settings.html",
            session,
            status,
            locales=[(code, i18n.NAMES[code]) for code in i18n.LOCALES],
            locale=locale,
            zone=zone,
            zones=zones,
            default_zone=default_zone.key if default_zone else "UTC",
            **context,
        )

    @router.get("/settings")
    @pages
    def settings_page(request: Request) -> Response:
        session = signed_in(request)
        prefs = preferences(session["user"])
        locale = prefs.get("locale") if prefs.get("locale") in i18n.LOCALES else ""
        zone = prefs.get("timezone") if isinstance(prefs.get("timezone"), str) else ""
        return settings_form(request, session, locale, zone, saved=request.query_params.get("saved") == "1")

    @router.post("/settings")
    async def save_settings(request: Request) -> Response:
        form = await posted(request)
        session = await run_in_threadpool(signed_in, request)
        check_csrf(request, session, form)
        lang = session["lang"]
        locale = form.get("locale", "")
        other = form.get("timezone_other", "")
        zone = (other.strip() if isinstance(other, str) else other) or form.get("timezone", "")
        problems: dict[str, str] = {}
        if not isinstance(locale, str) or locale not in ("", *i18n.LOCALES):
            problems["locale"] = lang.gettext(
                "language %(given)s: choose one of %(choices)s",
                given=repr(locale),
                choices=", ".join(i18n.LOCALES),
            )
        if not isinstance(zone, str) or (zone and i18n.zone(zone) is None):
            problems["timezone"] = lang.gettext(
                "time zone %(given)s is not an IANA time zone name (such as Europe/Moscow or UTC)",
                given=repr(zone),
            )
        if problems:
            return await run_in_threadpool(
                lambda: settings_form(
                    request,
                    session,
                    locale if isinstance(locale, str) else "",
                    zone if isinstance(zone, str) else "",
                    400,
                    problems=problems,
                )
            )

        def store() -> None:
            set_preference(session["user"], "locale", locale or None)
            set_preference(session["user"], "timezone", zone or None)

        await run_in_threadpool(store)
        return RedirectResponse("/settings?saved=1", 303)

    pages_reports.install(router, crm, signed_in, render, pages)  # reports and /model
    app.state.uploads = pages_import.install(router, crm, conf, entities, signed_in, check_csrf, posted, render, pages)
    pages_links.install(app, router, crm, entities, signed_in, check_csrf, posted, render, pages)  # links on cards
    pages_list.install(router, crm, entities, signed_in, check_csrf, posted, render, pages)  # columns, export, bulk
    for ent in entities:
        _entity_pages(router, crm, ent, signed_in, check_csrf, posted, render, pages)
        if ent.has_files:  # the card's files: download, upload, detach
            from .pages_files import file_pages

            file_pages(router, ent, conf, signed_in, check_csrf, posted, pages)
    app.include_router(router)


def _entity_pages(router: APIRouter, crm, ent: Entity, signed_in, check_csrf, posted, render, pages) -> None:
    name = ent.name
    base = f"/{name}"
    title_field = ent.title if ent.title in ent.fields else next(iter(ent.fields), None)

    # "my records": the ones the signed-in user owns or a link to users names (docs/access.md)
    mine_terms = ["owner = :me"] if ent.owner else []
    mine_terms += [f"{f.name} = :me" if f.type == "user" else f"{f.name} contains :me" for f in ent.user_links]
    mine = " or ".join(mine_terms)

    def list_url(request: Request, **changes) -> str:
        params = {k: v for k, v in request.query_params.items() if k != "after"}
        params.update({k: v for k, v in changes.items() if v is not None})
        for key in [k for k, v in changes.items() if v is None]:
            params.pop(key, None)
        return f"{base}?{urlencode(params)}" if params else base

    @router.get(base)
    @pages
    def list_page(request: Request) -> Response:
        session = signed_in(request)
        user = session["user"]
        q = (request.query_params.get("q") or "").strip()
        where = (request.query_params.get("where") or "").strip()
        order_by = (request.query_params.get("order_by") or "").strip()
        after = request.query_params.get("after")
        archived = request.query_params.get("archived") if ent.archive else None
        archived = archived if archived in ("only", "include") else "exclude"
        problem = None
        rows: list[dict] = []
        count = 0
        more = False
        try:
            cursor = decode_cursor(after) if after else {}
            ids = [hit["id"] for hit in user.search(q, entity=name, limit=10_000)] if q and ent.search else None
            kwargs: dict[str, Any] = {"order_by": order_by or None, "limit": PAGE_SIZE + 1, "archived": archived}
            if order_by:
                kwargs["offset"] = cursor.get("o", 0)
            else:
                kwargs["after"] = cursor.get("a")
            rows = user.find(name, where or None, ids=ids, **kwargs)
            count = user.count(name, where or None, ids=ids, limit=COUNT_CAP + 1, archived=archived)
        except E.ValidationError as exc:
            problem = {"message": str(exc), "position": getattr(exc, "position", None)}
        except HTTPProblem as exc:
            problem = {"message": exc.detail, "position": None}
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        next_url = None
        if more:
            cursor = decode_cursor(after) if after else {}
            nxt = {"o": cursor.get("o", 0) + PAGE_SIZE} if order_by else {"a": rows[-1]["id"]}
            next_url = (
                list_url(request)
                + ("&" if "?" in list_url(request) else "?")
                + urlencode({"after": encode_cursor(nxt)})
            )
        columns, own = pages_list.chosen_columns(user, ent)
        titles = _link_titles(user, [c.member for c in columns if c.kind == "link"], rows)
        sorts = {}
        for column in [*(c.key for c in columns if c.sortable), "id"]:
            sorts[column] = list_url(request, order_by=f"-{column}" if order_by == column else column)
        return render(
            request,
            "list.html",
            session,
            ent=ent,
            rows=rows,
            count=min(count, COUNT_CAP),
            capped=count > COUNT_CAP,
            columns=columns,
            titles=titles,
            title_field=title_field,
            q=q,
            where=where,
            order_by=order_by,
            problem=problem,
            next_url=next_url,
            sorts=sorts,
            first_url=list_url(request) if after else None,
            archived=archived,
            archive_url=list_url(request, archived=None if archived == "only" else "only"),
            mine_url=list_url(request, where=mine) if mine else None,
            **pages_list.list_context(crm, session, ent, request, rows, columns, own),
        )

    if ent.pipelines:

        @router.get(f"{base}/board")
        @pages
        def board_page(request: Request) -> Response:
            session = signed_in(request)
            pipeline = request.query_params.get("pipeline") or None
            if pipeline is not None and pipeline not in ent.pipelines:
                raise Refused(
                    404,
                    _(
                        "%(entity)s: no pipeline '%(pipeline)s'; pipelines: %(pipelines)s",
                        entity=name,
                        pipeline=pipeline,
                        pipelines=", ".join(ent.pipelines),
                    ),
                )
            board = session["user"].board(name, pipeline, limit_per_stage=50)
            amount = ent.fields.get(board.get("amount_field") or "")
            stages = [c["stage"] for c in board["columns"]]
            now = dt.datetime.now(dt.UTC)
            return render(
                request,
                "board.html",
                session,
                ent=ent,
                board=board,
                amount=amount,
                stages=stages,
                now=now,
                pipelines=list(ent.pipelines.values()),
            )

        @router.post(f"{base}/{{record_id}}/move")
        async def move(request: Request, record_id: int) -> Response:
            form = await posted(request)
            session = await run_in_threadpool(signed_in, request)
            check_csrf(request, session, form)
            stage = form.get("stage") if isinstance(form.get("stage"), str) else ""
            wants_json = "application/json" in request.headers.get("accept", "")
            back = _safe_next(form.get("next") if isinstance(form.get("next"), str) else None, f"{base}/{record_id}")
            try:
                record = await run_in_threadpool(
                    pages(lambda: session["user"].move(name, record_id, stage)),
                )
            except (E.TransitionError, E.ValidationError, E.ConflictError) as exc:
                if wants_json:
                    return JSONResponse({"ok": False, "reason": str(exc)}, 409)
                return RedirectResponse(_with_error(back, str(exc)), 303)
            if wants_json:
                return JSONResponse({"ok": True, "stage": record["stage"]})
            return RedirectResponse(back, 303)

    if ent.archive:

        @router.post(f"{base}/{{record_id}}/restore")
        async def restore(request: Request, record_id: int) -> Response:
            form = await posted(request)
            session = await run_in_threadpool(signed_in, request)
            check_csrf(request, session, form)
            try:
                await run_in_threadpool(pages(lambda: session["user"].restore(name, record_id)))
            except (E.ValidationError, E.ConflictError) as exc:
                return RedirectResponse(_with_error(f"{base}/{record_id}", str(exc)), 303)
            return RedirectResponse(f"{base}/{record_id}", 303)

    @router.get(f"{base}/options")
    @pages
    def options(request: Request) -> Response:
        """``<option>``s of this entity's records for a link's select (htmx swaps them in as the
        user types): the search hits for ``q`` (the first records without it), the ids chosen so far
        (``selected``, or the parameter ``field`` names) kept first; only what the user may read."""
        session = signed_in(request)
        user = session["user"]
        q = (request.query_params.get("q") or "").strip()
        given = request.query_params.getlist(request.query_params.get("field") or "selected")
        prefix = f"{name}:" if request.query_params.get("poly") == "1" else ""  # a polymorphic link's values
        given = [v.removeprefix(prefix) for v in given if v.startswith(prefix)]
        selected = [int(v) for v in given if v.isdigit() and len(v) < 19]
        try:
            if q and ent.search:
                ids = [hit["id"] for hit in user.search(q, entity=name, limit=OPTIONS_LIMIT)]
            else:
                ids = [r["id"] for r in user.find(name, limit=OPTIONS_LIMIT)]
        except E.ValidationError:  # text without a word: no hits
            ids = []
        keep = [i for i in selected if i not in ids]
        titles = user.titles(name, [*keep, *ids])
        items = [(f"{prefix}{i}", titles[i], i in selected) for i in [*keep, *ids] if i in titles]
        empty = request.query_params.get("empty") == "1"
        return render(request, "options.html", session, items=items, empty=empty)

    @router.get(f"{base}/new")
    @pages
    def new_page(request: Request) -> Response:
        session = signed_in(request)
        values = {k: v for k, v in request.query_params.multi_items()}
        return _form(request, render, session, ent, values, {}, None)

    @router.post(f"{base}/new")
    async def create(request: Request) -> Response:
        form = await posted(request)
        session = await run_in_threadpool(signed_in, request)
        check_csrf(request, session, form)

        def attempt():
            data = form_values(ent, form, creating=True, lang=session["lang"])
            try:
                record = session["user"].create(name, data)
            except (E.ValidationError, E.PermissionDenied) as exc:
                return _form(request, render, session, ent, form, *_issues(exc), status=422)
            return RedirectResponse(f"{base}/{record['id']}", 303)

        return await run_in_threadpool(attempt)

    @router.get(f"{base}/{{record_id}}")
    @pages
    def card_page(request: Request, record_id: int) -> Response:
        session = signed_in(request)
        user = session["user"]
        card = user.card(name, record_id, moves=True, timeline=50)  # one read of the record
        record = card["record"]
        path = moves = None
        if ent.pipelines:
            pipeline = ent.pipelines.get(record.get("pipeline") or "") or ent.default_pipeline
            path = list(pipeline.stages.values())
            moves = card.get("moves")
        timeline = card.get("timeline", [])
        people = {}  # links to users shown by the users' names
        for f in ent.user_links:
            refs = card["links"].get(f.name)
            refs = refs if isinstance(refs, list) else [refs] if refs else []
            people[f.name] = ", ".join(r["title"] for r in refs)
        return render(
            request,
            "card.html",
            session,
            ent=ent,
            record=record,
            people=people,
            card=card,
            path=path,
            moves=moves,
            timeline=timeline,
            title=_title(record, title_field, ent),
            link_blocks=pages_links.blocks(request, user, ent, card),
            files=user.files(name, record_id) if ent.has_files else [],
        )

    @router.get(f"{base}/{{record_id}}/edit")
    @pages
    def edit_page(request: Request, record_id: int) -> Response:
        session = signed_in(request)
        record = session["user"].get(name, record_id)
        values = {f.name: input_value(record.get(f.name), f) for f in editable(ent)}
        for link in ent.links.values():
            value = record.get(link.name)
            if link.many:  # ids, or deal:5 of a polymorphic one
                values[link.name] = [f"{v['entity']}:{v['id']}" if isinstance(v, dict) else str(v) for v in value or []]
            elif isinstance(value, dict):
                values[link.name] = f"{value['entity']}:{value['id']}"
            else:
                values[link.name] = "" if value is None else str(value)
        return _form(request, render, session, ent, values, {}, None, record=record)

    @router.post(f"{base}/{{record_id}}/edit")
    async def update(request: Request, record_id: int) -> Response:
        form = await posted(request)
        session = await run_in_threadpool(signed_in, request)
        check_csrf(request, session, form)

        @pages
        def attempt():
            user = session["user"]
            record = user.get(name, record_id)
            data = form_values(ent, form, creating=False, lang=session["lang"])
            version = form.get("version")
            try:
                user.update(name, record_id, data, version=int(version) if str(version).isdigit() else None)
            except (E.ValidationError, E.ConflictError, E.PermissionDenied) as exc:
                return _form(request, render, session, ent, form, *_issues(exc), record=record, status=422)
            return RedirectResponse(f"{base}/{record_id}", 303)

        return await run_in_threadpool(attempt)

    @router.post(f"{base}/{{record_id}}/note")
    async def note(request: Request, record_id: int) -> Response:
        form = await posted(request)
        session = await run_in_threadpool(signed_in, request)
        check_csrf(request, session, form)
        kind = form.get("kind") if isinstance(form.get("kind"), str) else "note"
        text = form.get("text") if isinstance(form.get("text"), str) else ""
        try:
            await run_in_threadpool(pages(lambda: session["user"].note(name, record_id, text, kind=kind)))
        except E.ValidationError as exc:
            return RedirectResponse(_with_error(f"{base}/{record_id}", str(exc)), 303)
        return RedirectResponse(f"{base}/{record_id}", 303)


def _with_error(url: str, message: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode({"error": message})


def _title(record: dict, title_field: str | None, ent: Entity) -> str:
    value = record.get(title_field) if title_field else None
    return str(value) if value not in (None, "") else f"{ent.caption} {record['id']}"


def _link_titles(user, links: list[Link], rows: list[dict]) -> dict[str, dict]:
    """Target entity -> {id: title} for the links of these rows: one query per target."""
    wanted: dict[str, set] = {}
    for link in links:
        for row in rows:
            value = row.get(link.name)
            if isinstance(value, dict):
                wanted.setdefault(value["entity"], set()).add(value["id"])
            elif isinstance(value, list):
                wanted.setdefault(link.target, set()).update(value)
            elif value is not None:
                wanted.setdefault(link.target, set()).add(value)
    return {target: user.titles(target, ids) for target, ids in wanted.items()}


def _issues(exc: E.MetaCRMError) -> tuple[dict, str | None]:
    """Per-field messages (the library's texts) and what is left for the whole form."""
    per_field: dict[str, list[str]] = {}
    general = []
    for issue in getattr(exc, "issues", ()):
        if issue.field:
            per_field.setdefault(issue.field, []).append(issue.message)
        else:
            general.append(issue.message)
    if not per_field and not general:
        general.append(str(exc))
    return per_field, "; ".join(general) or None


def _form(request, render, session, ent: Entity, values, issues: dict, general, *, record=None, status=200):
    user = session["user"]
    options: dict[str, list] = {}
    for link in ent.links.values():
        if link.polymorphic:  # by entity, then record (pages_links.poly_options)
            options[link.name] = pages_links.poly_options(user, link, values.get(link.name))
            continue
        rows = user.find(link.target, limit=OPTIONS_LIMIT)
        titles = user.titles(link.target, [r["id"] for r in rows])
        options[link.name] = [(str(rid), titles.get(rid, f"{link.target} {rid}")) for rid in (r["id"] for r in rows)]

    def value(name: str):
        given = values.get(name, "")
        return given

    # the vocabulary of each tags field, offered as suggestions (one GROUP BY on its index)
    tag_lists = {f.name: [t["tag"] for t in user.tags(ent.name, f.name)[:OPTIONS_LIMIT]] for f in editable(ent) if f.type == "tags"}

    def chosen(name: str) -> list[str]:
        given = values.get(name, [])
        return [given] if isinstance(given, str) else list(given)

    people: list[tuple[str, str]] = []
    if ent.user_links:  # the pick-list of a `to: user` link: enabled users, and those already chosen
        held = {login for f in ent.user_links for login in chosen(f.name)}
        off = user.disabled_users()
        people = [
            (u["login"], u["name"] or u["login"]) for u in user.users() if u["login"] not in off or u["login"] in held
        ]

    return render(
        request,
        "form.html",
        session,
        status,
        ent=ent,
        fields=editable(ent),
        links=list(ent.links.values()),
        options=options,
        value=value,
        chosen=chosen,
        issues=issues,
        general=general,
        record=record,
        input_types=INPUT_TYPES,
        decimals=DECIMALS,
        tag_lists=tag_lists,
        people=people,
    )


__all__ = ["Throttle", "install"]
