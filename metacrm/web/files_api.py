"""The API's file routes, for an entity with file fields or attachments (docs/files.md):

- ``GET /api/v1/{entity}/{id}/files``: the record's files;
- ``POST /api/v1/{entity}/{id}/files``: ``multipart/form-data`` with the part ``file`` (and
  ``field`` naming a file field; without it, an attachment) -> 201 and the file's metadata;
- ``GET /api/v1/{entity}/{id}/files/{file_id}``: the content, with its type, ``nosniff``, and
  ``Content-Disposition`` inline for a raster image, attachment for anything else;
- ``DELETE /api/v1/{entity}/{id}/files/{file_id}``: detach.

A record the user may not read answers 404 as everywhere in the API; a file id that is not
one of that record's files answers the same 404 whether it exists elsewhere or not.
"""

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from ..model.metamodel import Entity
from ..runtime.files import disposition
from .app import API, HTTPProblem, Settings, json_response

FILE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # a file opened from its URL runs nothing and loads nothing (an HTML or SVG attachment)
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    "Cache-Control": "private, no-cache",
}


async def upload(request: Request, conf: Settings, user, ent: Entity, record_id: int, *, check=None) -> dict[str, Any]:
    """Read a multipart upload and attach its ``file`` part (404 for a hidden record);
    ``check(form)`` runs on the parsed form first (the web page's CSRF check)."""
    from starlette.concurrency import run_in_threadpool

    from .routes import hidden_as_absent

    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given != "multipart/form-data":
        raise HTTPProblem(415, "unsupported-media-type", f"send multipart/form-data (got {given or 'no content type'})")
    declared = request.headers.get("content-length")
    if not declared or not declared.isdigit():
        raise HTTPProblem(411, "length-required", "an upload needs a Content-Length")
    if int(declared) > conf.max_upload:
        raise HTTPProblem(413, "content-too-large", f"the upload is over {conf.max_upload} bytes")
    form = await request.form(max_files=1, max_fields=10)
    try:
        if check is not None:
            check(form)
        part, field = form.get("file"), form.get("field") or None
        if part is None or isinstance(part, str):
            raise HTTPProblem(422, "validation-error", f"{ent.name}: send the file as the multipart part 'file'")
        if field is not None and not isinstance(field, str):
            raise HTTPProblem(422, "validation-error", f"{ent.name}: 'field' names a file field (text)")

        def work():
            with hidden_as_absent(ent, record_id):
                return user.attach(ent.name, record_id, part.file, field=field, name=part.filename or "")

        return await run_in_threadpool(work)
    finally:
        await form.close()


def serve_file(user, ent: Entity, record_id: int, file_id: int, *, hidden) -> Response:
    """The content of a file with its headers (``hidden``: the hidden-as-absent context)."""
    with hidden(ent, record_id):
        info, stream = user.open_file(ent.name, record_id, file_id)
    mime, header = disposition(info)

    def chunks() -> Iterator[bytes]:
        with stream:
            while block := stream.read(1 << 16):
                yield block

    headers = {**FILE_HEADERS, "Content-Disposition": header, "Content-Length": str(info["size"])}
    headers["ETag"] = f'"{info["sha256"]}"'
    return StreamingResponse(chunks(), media_type=mime, headers=headers)


def file_routes(router: APIRouter, ent: Entity, conf: Settings, User, tag) -> None:
    from .routes import hidden_as_absent

    name = ent.name
    base = f"/{name}/{{record_id}}/files"

    @router.get(base, tags=tag, operation_id=f"files_{name}")
    def list_files(user: User, record_id: int) -> Response:
        with hidden_as_absent(ent, record_id):
            return json_response({"items": user.files(name, record_id)})

    fields = [f.name for f in ent.file_fields]
    part = {"type": "string", "enum": fields, "description": "A file field (none: an attachment)"}
    body = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **({"field": part} if fields else {}),
                    },
                }
            }
        },
    }

    @router.post(base, tags=tag, status_code=201, operation_id=f"attach_{name}", openapi_extra={"requestBody": body})
    async def attach_file(request: Request, user: User, record_id: int) -> Response:
        info = await upload(request, conf, user, ent, record_id)
        location = f"{API}/{name}/{record_id}/files/{info['id']}"
        return json_response(info, 201, {"Location": location})

    @router.get(f"{base}/{{file_id}}", tags=tag, operation_id=f"download_{name}", response_class=Response)
    def download_file(user: User, record_id: int, file_id: int) -> Response:
        return serve_file(user, ent, record_id, file_id, hidden=hidden_as_absent)

    @router.delete(f"{base}/{{file_id}}", tags=tag, operation_id=f"detach_{name}")
    def detach_file(user: User, record_id: int, file_id: int) -> Response:
        with hidden_as_absent(ent, record_id):
            return json_response({"detached": user.detach(name, record_id, file_id)})


__all__ = ["FILE_HEADERS", "file_routes", "serve_file", "upload"]
