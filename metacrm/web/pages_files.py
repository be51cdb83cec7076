"""The card's files (docs/files.md): ``GET /{entity}/{id}/files/{file_id}`` serves a file to a
signed-in user who may read the record (a hidden record's file answers 404 as an absent
one); ``POST /{entity}/{id}/files`` (multipart, with the session's CSRF token) attaches one;
``POST /{entity}/{id}/files/{file_id}/detach`` removes one. Both return to the card, with the
refusal's message when there is one."""

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from .. import errors as E
from ..model.metamodel import Entity
from .app import HTTPProblem, Settings
from .files_api import serve_file, upload


def file_pages(router: APIRouter, ent: Entity, conf: Settings, signed_in, check_csrf, posted, pages) -> None:
    from contextlib import contextmanager

    from .pages import Refused, _with_error

    name = ent.name
    base = f"/{name}/{{record_id}}/files"

    @contextmanager
    def as_page(_ent, _record_id):
        yield  # `pages` turns a hidden record into the same 404 as an absent one

    @router.get(f"{base}/{{file_id}}")
    @pages
    def download(request: Request, record_id: int, file_id: int) -> Response:
        session = signed_in(request)
        return serve_file(session["user"], ent, record_id, file_id, hidden=as_page)

    @router.post(base)
    async def attach(request: Request, record_id: int) -> Response:
        session = await run_in_threadpool(signed_in, request)
        card = f"/{name}/{record_id}"

        def check(form) -> None:
            csrf = form.get("csrf")
            check_csrf(request, session, {"csrf": csrf if isinstance(csrf, str) else ""})

        try:
            await upload(request, conf, session["user"], ent, record_id, check=check)
        except (E.ValidationError, E.SetupError, HTTPProblem) as exc:
            message = exc.detail if isinstance(exc, HTTPProblem) else str(exc)
            return RedirectResponse(_with_error(card, message), 303)
        except E.NotFound as exc:  # a hidden record answers as an absent one (routes.hidden_as_absent)
            raise Refused(404, str(exc)) from None
        return RedirectResponse(card, 303)

    @router.post(f"{base}/{{file_id}}/detach")
    async def detach(request: Request, record_id: int, file_id: int) -> Response:
        form = await posted(request)
        session = await run_in_threadpool(signed_in, request)
        check_csrf(request, session, form)
        card = f"/{name}/{record_id}"
        try:
            await run_in_threadpool(pages(lambda: session["user"].detach(name, record_id, file_id)))
        except E.ValidationError as exc:
            return RedirectResponse(_with_error(card, str(exc)), 303)
        return RedirectResponse(card, 303)


__all__ = ["file_pages"]
