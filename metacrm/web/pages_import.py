"""The import page (docs/web.md): ``/{entity}/import`` takes a CSV file in three steps, acting as
the signed-in user, with the library's import (metacrm/io/csv_io.py) doing every check.

1. ``POST /{entity}/import`` (multipart/form-data: the file, the options, the CSRF token): the
   file is read as the library reads it and its columns mapped as the library maps them; the
   page shows the mapping and the first rows, or the library's message (an unknown column, a
   file that is not UTF-8, an empty file). Nothing is written.
2. ``POST /{entity}/import/check``: a dry run, the library's import run in a transaction that
   is rolled back, listing the rows it rejects and why. Nothing is written.
3. ``POST /{entity}/import/run``: the import itself, with the same options, giving the report
   the CLI's ``metacrm import`` gives (the summary, the rejected and noted rows).

Between the steps the file stays on the server: an in-process store keyed by a random id and
bound to the session that uploaded it (another session, or a guessed id, finds nothing), each
upload no larger than the app's body limit, at most ``Uploads.LIMIT`` of them (the oldest go
first), each forgotten ``Uploads.TTL`` seconds after its upload or once imported. The client
only holds the id, so it cannot swap the file between the dry run and the import. With
several worker processes an upload is known to the worker that received it only: a step that
lands on another worker asks to upload the file again (run ``metacrm serve`` with one worker,
the default, to import through the browser).

The multipart body is read through the app's ``read_body`` (so the size limit answers 413
before the body is all read) and split by the standard library's ``email`` parser: no
dependency beyond the ``web`` extra.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations

import io
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from email import policy
from email.parser import BytesParser

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .. import errors as E
from ..io.csv_io import ID_COLUMN, ImportRefused, ImportResult, _members, import_csv, map_columns, read_csv
from ..model.metamodel import Entity
from ..runtime.access import scope
from .app import HTTPProblem, Settings, read_body

IGNORE = "-"  # a column mapped to nothing
PREVIEW_ROWS = 10  # rows shown with the mapping
MULTIPART = "multipart/form-data"
OPTIONS = ("skip_invalid", "import_stages", "near_matches", "no_automations")
# the CLI's --skip-invalid, --with-stages, --near-matches, --no-automations


class Uploads:
    """Uploaded files between the steps, in this process: id -> (session key, file name, bytes,
    time of upload). ``clock`` is replaceable for tests."""

    LIMIT = 64
    TTL = 1800.0

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._items: OrderedDict[str, tuple[str, str, bytes, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        for key in [k for k, item in self._items.items() if now - item[3] > self.TTL]:
            del self._items[key]
        while len(self._items) > self.LIMIT:
            self._items.popitem(last=False)

    def put(self, owner: str, name: str, data: bytes) -> str:
        key = secrets.token_urlsafe(24)
        with self._lock:
            self._items[key] = (owner, name, data, self.clock())
            self._expire(self.clock())
        return key

    def get(self, owner: str, key: str) -> tuple[str, bytes] | None:
        with self._lock:
            self._expire(self.clock())
            item = self._items.get(key)
        if item is None or not secrets.compare_digest(item[0], owner):
            return None
        return item[1], item[2]

    def drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """name -> (file name or None, bytes) of a multipart/form-data body (the last part of a name wins)."""
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        raise E.ValidationError("the upload is not a well-formed multipart/form-data body: send the form again")
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            parts[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return parts


def _mapping(form: dict) -> dict[str, str]:
    """The columns the user mapped: ``map.COLUMN`` = a member, or ``-`` to ignore the column
    (the library's ``mapping``; a column left out is placed by its name or label)."""
    mapping = {}
    for key, value in form.items():
        if key.startswith("map.") and isinstance(value, str) and value:
            mapping[key[4:]] = "" if value == IGNORE else value
    return mapping


def _options(form: dict) -> dict[str, bool]:
    return {name: form.get(name) in ("1", "on", "true") for name in OPTIONS}


def _library(options: dict[str, bool]) -> dict[str, bool]:
    """The form's boxes as import_csv's keywords (the box says "do not run the automations")."""
    chosen = {k: v for k, v in options.items() if k != "no_automations"}
    return {**chosen, "automations": not options.get("no_automations", False)}


def install(
    router: APIRouter, crm, conf: Settings, entities: list[Entity], signed_in, check_csrf, posted, render, pages
) -> Uploads:
    """Register ``/{entity}/import`` and its steps for every entity (before the card's
    ``/{entity}/{id}``, which would take ``import`` for an id); the upload store is returned
    (the app keeps it as ``app.state.uploads``)."""
    from .pages import Refused

    uploads = Uploads()

    def allowed(session: dict, ent: Entity) -> None:
        if scope(crm.model, session["user"].actor, ent.name, "import") == "none":
            raise Refused(
                403,
                session["lang"].gettext(
                    "%(login)s may not import %(entity)s records (no import permission)",
                    login=session["login"],
                    entity=ent.name,
                ),
            )

    def owner_of(session: dict) -> str:
        return f"{session['login']}\x00{session['csrf']}"

    for ent in entities:
        _entity_import(router, ent, conf, uploads, allowed, owner_of, signed_in, check_csrf, posted, render, pages)
    return uploads


def _entity_import(router, ent, conf, uploads, allowed, owner_of, signed_in, check_csrf, posted, render, pages):
    from .pages import Refused

    name = ent.name
    base = f"/{name}/import"

    def page(request, session, step: str, status: int = 200, **context) -> Response:
        context.setdefault("options", dict.fromkeys(OPTIONS, False))
        return render(request, "import.html", session, status, ent=ent, step=step, **context)

    members = [*_members(ent), ID_COLUMN]

    def mapping_of(header: list[str], options: dict, mapping: dict) -> tuple[list[dict], list[str]]:
        """Each column with the member the library fills from it (``mapping`` as the user set it),
        and the library's messages naming the columns it cannot place."""
        try:
            placed = {c.index: c for c in map_columns(ent, header, mapping, import_stages=options["import_stages"])}
            problems: list[str] = []
        except E.ValidationError as exc:
            problems = [issue.message for issue in exc.issues] or [str(exc)]
            bad = {issue.value for issue in exc.issues if isinstance(issue.value, str)} & set(header)
            try:  # where the other columns go
                rest = map_columns(ent, header, {**mapping, **dict.fromkeys(bad, "")}, import_stages=True)
                placed = {c.index: c for c in rest if c.name not in bad}
            except E.ValidationError:
                placed = {}
        columns = []
        for index, column in enumerate(header):
            found = placed.get(index)
            member = found.target if found else None
            item = ent.fields.get(member or "") or ent.links.get(member or "")
            chosen = mapping.get(column)
            columns.append(
                {
                    "index": index,
                    "column": column,
                    "member": member,
                    "label": item.label if item is not None else None,
                    "kind": found.kind if found else "unknown",
                    "chosen": "" if chosen is None else (chosen or IGNORE),
                }
            )
        return columns, problems

    def preview_page(request, session, key, filename, data, options, mapping, status=200, problems=()):
        _, header, rows = read_csv(_named(data, filename))
        columns, unplaced = mapping_of(header, options, mapping)
        return page(
            request,
            session,
            "preview",
            422 if unplaced or problems else status,
            options=options,
            upload=key,
            filename=filename,
            columns=columns,
            members=members,
            header=header,
            rows=rows[:PREVIEW_ROWS],
            total=len(rows),
            problems=[*problems, *unplaced],
        )

    def upload_of(session: dict, form: dict) -> tuple[str, str, bytes]:
        key = form.get("upload")
        found = uploads.get(owner_of(session), key) if isinstance(key, str) else None
        if found is None:
            raise E.ValidationError(
                session["lang"].gettext(
                    "the uploaded file is no longer here (it expired or was imported): upload it again"
                )
            )
        return key, *found

    @router.get(base)
    @pages
    def import_form(request: Request) -> Response:
        session = signed_in(request)
        allowed(session, ent)
        return page(request, session, "upload")

    @router.post(base)
    async def preview(request: Request) -> Response:
        session = await run_in_threadpool(signed_in, request)
        content_type = request.headers.get("content-type", "")
        try:
            body = await read_body(request, conf, MULTIPART)
        except HTTPProblem as exc:  # 413 past the body limit, 415 for another content type
            raise Refused(exc.status, exc.detail) from None
        try:
            parts = parse_multipart(body, content_type)
        except E.ValidationError as exc:
            raise Refused(400, str(exc)) from None
        form = {key: value.decode("utf-8", "replace") for key, (filename, value) in parts.items() if filename is None}
        check_csrf(request, session, form)
        allowed(session, ent)
        options = _options(form)
        filename, data = parts.get("file", (None, b""))
        if not filename:
            return page(
                request,
                session,
                "upload",
                422,
                options=options,
                problems=[session["lang"].gettext("choose a CSV file to upload")],
            )

        def attempt() -> Response:
            label = filename.replace("\\", "/").rsplit("/", 1)[-1] or "the file"
            try:
                _, header, rows = read_csv(_named(data, label))
            except E.ValidationError as exc:
                return page(request, session, "upload", 422, options=options, problems=[str(exc)])
            key = uploads.put(owner_of(session), label, data)  # kept even with unknown columns: they may be mapped
            return preview_page(request, session, key, label, data, options, {})

        return await run_in_threadpool(attempt)

    def run(request: Request, form: dict, *, dry: bool) -> Response:
        session = signed_in(request)
        check_csrf(request, session, form)
        allowed(session, ent)
        options = _options(form)
        try:
            key, filename, data = upload_of(session, form)
        except E.ValidationError as exc:
            return page(request, session, "upload", 410, options=options, problems=[str(exc)])
        user = session["user"]
        mapping = _mapping(form)
        refused = None
        try:
            if dry:
                result = _dry_run(user, name, _named(data, filename), options, mapping)
            else:
                result = import_csv(user, name, _named(data, filename), mapping=mapping, **_library(options))
        except ImportRefused as exc:
            result, refused = exc.result, str(exc)
        except E.ValidationError:  # the columns as mapped: the preview again, with the library's messages
            return preview_page(request, session, key, filename, data, options, mapping)
        if not dry and refused is None:
            uploads.drop(key)
        issues = sorted([*result.rejected, *result.notes], key=lambda i: (i.row, i.kind != "rejected"))
        return page(
            request,
            session,
            "check" if dry else ("done" if refused is None else "refused"),
            422 if refused and not dry else 200,
            options=options,
            upload=key,
            filename=filename,
            mapping=mapping,
            result=result,
            refused=refused,
            issues=issues,
            summary=_summary(result, dry=dry, refused=refused is not None, lang=session["lang"]),
        )

    @router.post(f"{base}/check")
    async def check(request: Request) -> Response:
        form = await posted(request)
        return await run_in_threadpool(pages(run), request, form, dry=True)

    @router.post(f"{base}/run")
    async def run_import(request: Request) -> Response:
        form = await posted(request)
        return await run_in_threadpool(pages(run), request, form, dry=False)


class _RolledBack(Exception):
    def __init__(self, result: ImportResult):
        super().__init__("dry run")
        self.result = result


def _dry_run(user, entity: str, source, options: dict, mapping: dict) -> ImportResult:
    """The library's import in a transaction rolled back at its end: what it would do, nothing written."""
    try:
        with user.transaction():
            raise _RolledBack(import_csv(user, entity, source, mapping=mapping, **_library(options)))
    except _RolledBack as done:
        return done.result


def _named(data: bytes, name: str) -> io.BytesIO:
    stream = io.BytesIO(data)
    stream.name = name
    return stream


def _summary(result: ImportResult, *, dry: bool, refused: bool, lang) -> str:
    """The CLI's line (``ImportResult.summary``, the library's words); a dry run says what the
    import would do, in the page's language."""
    if refused:
        rows = len(result.rejected_rows)
        if dry:
            return lang.ngettext(
                "nothing would be imported: %(num)d row rejected",
                "nothing would be imported: %(num)d rows rejected",
                rows,
            )
        return lang.ngettext(
            "nothing was imported: %(num)d row rejected", "nothing was imported: %(num)d rows rejected", rows
        )
    text = result.summary()
    return lang.gettext("dry run: would have %(summary)s; nothing was written", summary=text) if dry else text


__all__ = ["Uploads", "install", "parse_multipart"]
