"""The API's routes, generated from the model: per entity its list, records, links, stages,
activity, CSV; then the model, the acting user, tasks, search and reports.

A record the acting user may not read answers exactly as an absent one (404, the same
document): its existence is not revealed. An action the user's role lacks on a record they
can read answers 403.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations (the
# acting-user dependency is a local of install()) when the routes are declared

import io
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from starlette.responses import Response, StreamingResponse

from .. import errors as E
from ..model.metamodel import Entity
from ..runtime.records import as_id
from .app import (
    API,
    HTTPProblem,
    Settings,
    decode_cursor,
    encode_cursor,
    etag,
    if_match,
    json_object,
    json_response,
    names,
    parse_json,
    query_params,
    read_body,
)

CSV_TYPE = "text/csv"


@contextmanager
def hidden_as_absent(ent: Entity, record_id) -> Iterator[None]:
    """A record the user may not read is reported exactly as one that does not exist."""
    try:
        yield
    except E.PermissionDenied:
        raise E.NotFound(f"{ent.name} {as_id(ent, record_id)} not found") from None


def visible(user, ent: Entity, record_id) -> dict:
    with hidden_as_absent(ent, record_id):
        return user.get(ent.name, record_id)


def _choose(given: list[str], allowed, what: str, ent: Entity) -> None:
    from ..model.suggest import did_you_mean, listing

    for name in given:
        if name not in allowed:
            hint = did_you_mean(name, list(allowed))
            raise HTTPProblem(
                400,
                "bad-request",
                f"{ent.name}: unknown {what} '{name}'"
                + (f" ({hint})" if hint else "")
                + f"; {what}s: {listing(allowed)}",
            )


def _expand(user, ent: Entity, records: list[dict], links: list[str]) -> None:
    """Replace each named link's ids by ``{"entity", "id", "title"}`` (``title`` None and
    ``hidden`` true for a record the user may not read): one query per target entity."""
    _choose(links, ent.links, "link", ent)
    wanted: dict[str, set[int]] = {}

    def refs(link, value):
        items = value if isinstance(value, list) else [] if value is None else [value]
        for item in items:
            if isinstance(item, dict):
                yield item["entity"], item["id"]
            else:
                yield link.targets[0], item

    for name in links:
        link = ent.links[name]
        for record in records:
            for target, rid in refs(link, record.get(name)):
                wanted.setdefault(target, set()).add(rid)
    titles = {target: user.titles(target, ids) for target, ids in wanted.items()}
    for name in links:
        link = ent.links[name]
        for record in records:
            shown = [
                {
                    "entity": t,
                    "id": rid,
                    "title": titles[t].get(rid),
                    **({"hidden": True} if rid not in titles[t] else {}),
                }
                for t, rid in refs(link, record.get(name))
            ]
            record[name] = shown if link.many else (shown[0] if shown else None)


def _pick(records: list[dict], fields: list[str]) -> list[dict]:
    if not fields:
        return records
    keep = ["id", *fields]
    return [{k: r[k] for k in keep if k in r} for r in records]


def _next_url(request: Request, cursor: str) -> str:
    return str(request.url.include_query_params(after=cursor))


def entity_routes(router: APIRouter, ent: Entity, conf: Settings, User) -> None:
    name = ent.name
    base = f"/{name}"
    tag = [ent.label or name]
    choosable = ["id", *ent.fields, *ent.links, "owner", "stage", "version", "created_at", "updated_at"]
    choosable += ["created_by", "updated_by"]
    choosable += ["archived_at", "archived_by"] if ent.archive else []

    @router.get(base, tags=tag, summary=f"List {ent.plural or name}", operation_id=f"list_{name}")
    def list_records(
        request: Request,
        user: User,
        where: str | None = Query(None, description="A filter in the expression language; values as p.NAME=..."),
        q: str | None = Query(None, description="Full-text search (the entity's search fields)"),
        order_by: str | None = Query(None, description="Fields, '-' for descending: -amount,title"),
        fields: str | None = Query(None, description="The fields to return (id always)"),
        expand: str | None = Query(None, description="Links whose records' titles come inline"),
        limit: int = Query(conf.default_limit, ge=1, le=conf.max_limit),
        after: str | None = Query(None, description="The cursor of the next page (from `next`)"),
        count: bool = Query(False, description="Also return the total number of matching records"),
        archived: str | None = Query(
            None, description="An entity with archive: true: `only` the archived records, or `include` them too"
        ),
    ) -> Response:
        params = query_params(request)
        chosen, expanded = names(fields), names(expand)
        _choose(chosen, choosable, "field", ent)
        cursor = decode_cursor(after) if after else {}
        ids = None
        if q is not None:
            ids = [hit["id"] for hit in user.search(q, entity=name, limit=10_000)]
        mode = archived or "exclude"
        kwargs: dict[str, Any] = {"order_by": order_by, "limit": limit + 1, "archived": mode}
        if order_by:
            kwargs["offset"] = cursor.get("o", 0)
        else:
            kwargs["after"] = cursor.get("a")
        rows = user.find(name, where, params, ids=ids, **kwargs)
        more = len(rows) > limit
        rows = rows[:limit]
        body: dict[str, Any] = {}
        headers = {}
        if more:
            nxt = {"o": cursor.get("o", 0) + limit} if order_by else {"a": rows[-1]["id"]}
            body["next"] = _next_url(request, encode_cursor(nxt))
            headers["Link"] = f'<{body["next"]}>; rel="next"'
        else:
            body["next"] = None
        if count:
            body["count"] = user.count(name, where, params, ids=ids, archived=mode)
        if expanded:
            _expand(user, ent, rows, expanded)
        body["items"] = _pick(rows, chosen)
        return json_response(body, headers=headers)

    @router.post(base, tags=tag, status_code=201, summary=f"Create {name} records", operation_id=f"create_{name}")
    async def create_records(request: Request, user: User) -> Response:
        from starlette.concurrency import run_in_threadpool

        data = parse_json(await read_body(request, conf, "application/json"))
        if isinstance(data, list):
            if not data:
                raise HTTPProblem(400, "bad-json", "an empty array creates nothing: send one record or several")
            for index, item in enumerate(data):
                json_object(item, f"item {index}")
            created = await run_in_threadpool(user.create_many, name, data)
            return json_response({"items": created}, 201)
        record = await run_in_threadpool(user.create, name, json_object(data))
        headers = {"Location": f"{API}/{name}/{record['id']}", **etag(record)}
        return json_response(record, 201, headers)

    @router.get(f"{base}/board", tags=tag, operation_id=f"board_{name}") if ent.pipelines else _skip
    def board(
        user: User,
        pipeline: str | None = None,
        where: str | None = None,
        order_by: str | None = None,
        limit_per_stage: int = Query(20, ge=0, le=conf.max_limit),
    ) -> Response:
        return json_response(
            user.board(name, pipeline, limit_per_stage=limit_per_stage, order_by=order_by, where=where)
        )

    @router.get(f"{base}/export", tags=tag, operation_id=f"export_{name}", response_class=Response)
    def export(request: Request, user: User, where: str | None = None, order_by: str | None = None) -> Response:
        from ..io.csv_io import export_csv
        from ..runtime.access import scope

        if scope(user.model, user.actor, name, "export") == "none":  # as an import is refused, not emptied
            raise E.PermissionDenied(f"user '{user.user}' may not export {name} records (scope for export: none)")
        # a large export goes to a file first (memory stays bounded), then streams out
        spool = tempfile.SpooledTemporaryFile(max_size=4 << 20, mode="w+", encoding="utf-8", newline="")  # noqa: SIM115
        try:
            export_csv(user, name, spool, where=where, params=query_params(request), order_by=order_by)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)

        def chunks():
            with spool:
                while block := spool.read(64 << 10):
                    yield block.encode("utf-8")

        disposition = f'attachment; filename="{name}.csv"'
        return StreamingResponse(
            chunks(), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": disposition}
        )

    @router.post(f"{base}/import", tags=tag, operation_id=f"import_{name}")
    async def import_rows(
        request: Request,
        user: User,
        skip_invalid: bool = False,
        with_stages: bool = False,
        near_matches: bool = False,
        automations: bool = True,
    ) -> Response:
        from starlette.concurrency import run_in_threadpool

        from ..io.csv_io import import_csv

        body = await read_body(request, conf, CSV_TYPE)
        result = await run_in_threadpool(
            lambda: import_csv(
                user,
                name,
                io.BytesIO(body),
                skip_invalid=skip_invalid,
                import_stages=with_stages,
                near_matches=near_matches,
                automations=automations,
            )
        )
        return json_response(result.to_dict())

    @router.get(f"{base}/{{record_id}}", tags=tag, operation_id=f"get_{name}")
    def get_record(user: User, record_id: int) -> Response:
        record = visible(user, ent, record_id)
        return json_response(record, headers=etag(record))

    @router.patch(f"{base}/{{record_id}}", tags=tag, operation_id=f"update_{name}")
    async def update_record(request: Request, user: User, record_id: int) -> Response:
        from starlette.concurrency import run_in_threadpool

        version = if_match(request)
        data = json_object(
            parse_json(await read_body(request, conf, "application/json", "application/merge-patch+json"))
        )

        def work():
            visible(user, ent, record_id)
            try:
                return user.update(name, record_id, data, version=version)
            except E.ConflictError as exc:
                if version is not None and not exc.retryable and exc.expected_version is not None:
                    raise HTTPProblem(412, "precondition-failed", str(exc)) from None
                raise

        record = await run_in_threadpool(work)
        return json_response(record, headers=etag(record))

    @router.delete(f"{base}/{{record_id}}", tags=tag, operation_id=f"delete_{name}")
    def delete_record(request: Request, user: User, record_id: int) -> Response:
        version = if_match(request)
        record = visible(user, ent, record_id)
        if version is not None and record.get("version") != version:
            raise HTTPProblem(
                412,
                "precondition-failed",
                f"{name} {record_id} is at version {record['version']}, not {version}: read it again",
            )
        return json_response({"archived" if ent.archive else "deleted": user.delete(name, record_id)})

    if ent.archive:

        @router.post(f"{base}/{{record_id}}/restore", tags=tag, operation_id=f"restore_{name}")
        def restore_record(user: User, record_id: int) -> Response:
            visible(user, ent, record_id)
            record = user.restore(name, record_id)
            return json_response(record, headers=etag(record))

        @router.post(f"{base}/{{record_id}}/purge", tags=tag, operation_id=f"purge_{name}")
        def purge_record(user: User, record_id: int) -> Response:
            visible(user, ent, record_id)
            return json_response({"purged": user.purge(name, record_id)})

    if ent.pipelines:

        @router.post(f"{base}/{{record_id}}/move", tags=tag, operation_id=f"move_{name}")
        async def move(request: Request, user: User, record_id: int) -> Response:
            from starlette.concurrency import run_in_threadpool

            data = json_object(parse_json(await read_body(request, conf, "application/json")))
            stage = data.get("stage")
            if not isinstance(stage, str) or not stage:
                raise HTTPProblem(422, "validation-error", f'{name}: give the target stage: {{"stage": ...}}')
            unknown = sorted(set(data) - {"stage", "note", "version"})
            if unknown:
                raise HTTPProblem(
                    422, "validation-error", f"move: unknown key(s) {', '.join(unknown)}; keys: stage, note, version"
                )
            version = data.get("version", if_match(request))
            if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
                raise HTTPProblem(422, "validation-error", "move: version must be a whole number")
            note = data.get("note")
            if note is not None and not isinstance(note, str):
                raise HTTPProblem(422, "validation-error", "move: note must be text")

            def work():
                visible(user, ent, record_id)
                try:
                    return user.move(name, record_id, stage, note=note, version=version)
                except E.ConflictError as exc:
                    if version is not None and not getattr(exc, "retryable", False) and "version" in str(exc):
                        raise HTTPProblem(412, "precondition-failed", str(exc)) from None
                    raise

            record = await run_in_threadpool(work)
            return json_response(record, headers=etag(record))

        @router.get(f"{base}/{{record_id}}/moves", tags=tag, operation_id=f"moves_{name}")
        def moves(user: User, record_id: int) -> Response:
            with hidden_as_absent(ent, record_id):
                return json_response(user.allowed_moves(name, record_id))

    @router.get(f"{base}/{{record_id}}/history", tags=tag, operation_id=f"history_{name}")
    def history(user: User, record_id: int, limit: int = Query(100, ge=1, le=1000)) -> Response:
        with hidden_as_absent(ent, record_id):
            return json_response(user.timeline(name, record_id, limit=limit))

    @router.post(f"{base}/{{record_id}}/notes", tags=tag, status_code=201, operation_id=f"note_{name}")
    async def add_note(request: Request, user: User, record_id: int) -> Response:
        from starlette.concurrency import run_in_threadpool

        data = json_object(parse_json(await read_body(request, conf, "application/json")))
        text, kind = data.get("text"), data.get("kind", "note")
        if not isinstance(text, str) or not isinstance(kind, str):
            raise HTTPProblem(422, "validation-error", 'note: give {"text": "...", "kind": "note|call|email|meeting"}')

        def work():
            with hidden_as_absent(ent, record_id):
                return user.note(name, record_id, text, kind=kind)

        return json_response(await run_in_threadpool(work), 201)

    for link_name in [*ent.links, *ent.inverses]:
        _link_routes(router, ent, link_name, tag, User, conf)
    if ent.has_files:
        from .files_api import file_routes

        file_routes(router, ent, conf, User, tag)
    for f in ent.user_links:
        _user_link_routes(router, ent, f.name, tag, User)


def _user_link_routes(router: APIRouter, ent: Entity, link: str, tag, User) -> None:
    """PUT / DELETE ``/{entity}/{id}/{link}/{login}``: link or unlink a user of a ``to: user`` link."""
    name = ent.name

    @router.put(f"/{name}/{{record_id}}/{link}/{{login}}", tags=tag, operation_id=f"link_{name}_{link}")
    def add_user(user: User, record_id: int, login: str) -> Response:
        visible(user, ent, record_id)  # a hidden record answers as a missing one
        return json_response(user.link(name, record_id, link, login))

    @router.delete(f"/{name}/{{record_id}}/{link}/{{login}}", tags=tag, operation_id=f"unlink_{name}_{link}")
    def remove_user(user: User, record_id: int, login: str) -> Response:
        visible(user, ent, record_id)
        return json_response(user.unlink(name, record_id, link, login))


def _link_routes(router: APIRouter, ent: Entity, link: str, tag, User, conf: Settings) -> None:
    name = ent.name

    @router.get(f"/{name}/{{record_id}}/{link}", tags=tag, operation_id=f"related_{name}_{link}")
    def related(
        request: Request,
        user: User,
        record_id: int,
        where: str | None = None,
        order_by: str | None = None,
        limit: int = Query(100, ge=1, le=500),
    ) -> Response:
        with hidden_as_absent(ent, record_id):
            rows = user.related(
                name, record_id, link, where=where, params=query_params(request), order_by=order_by, limit=limit
            )
        return json_response({"items": rows})

    # through an inverse the change is made on the target (a client's deals: the deal's
    # client), which must then be visible too: a hidden one answers as a missing one
    source = ent.inverses[link].source if link in ent.inverses else None

    def both_visible(user, record_id: int, target: str) -> None:
        visible(user, ent, record_id)
        if source is not None:
            visible(user, user.model.entities[source], target)

    @router.put(f"/{name}/{{record_id}}/{link}/{{target}}", tags=tag, operation_id=f"link_{name}_{link}")
    async def add_link(request: Request, user: User, record_id: int, target: str) -> Response:
        from starlette.concurrency import run_in_threadpool

        values = None  # a link with fields: its values as a JSON object (set, or changed when linked)
        if request.headers.get("content-type") or request.headers.get("content-length") not in (None, "0"):
            body = await read_body(request, conf, "application/json")
            if body.strip():
                values = json_object(parse_json(body), "the link's values")

        def work():
            both_visible(user, record_id, target)
            return user.link(name, record_id, link, target, values=values)

        return json_response(await run_in_threadpool(work))

    @router.delete(f"/{name}/{{record_id}}/{link}/{{target}}", tags=tag, operation_id=f"unlink_{name}_{link}")
    def remove_link(user: User, record_id: int, target: str) -> Response:
        both_visible(user, record_id, target)
        return json_response(user.unlink(name, record_id, link, target))


def _skip(func):
    return func


def install(app: FastAPI, crm, conf: Settings, User) -> None:
    from ..model.document import model_document

    router = APIRouter(prefix=API)
    model = crm.model
    document = model_document(model)

    @app.get("/healthz", tags=["server"], operation_id="healthz")
    def healthz() -> Response:
        recorded = crm.recorded_model()  # DatabaseUnavailable: 503
        if recorded is None or recorded["sha256"] != model.sha256:
            crm._ready()  # raises the MigrationError that says what to run (503)
        return json_response({"status": "ok", "model": model.name, "sha256": model.sha256})

    @router.get("/model", tags=["model"], operation_id="model")
    def get_model(user: User) -> Response:
        return json_response(document)

    @router.get("/me", tags=["model"], operation_id="me")
    def me(user: User) -> Response:
        info = user.user_info(user.user)
        return json_response(info)

    @router.get("/tasks", tags=["activity"], operation_id="tasks")
    def tasks(
        user: User,
        overdue: bool = False,
        for_user: str | None = Query(None, alias="user"),
        entity: str | None = None,
        include_done: bool = False,
        limit: int = Query(100, ge=1, le=conf.max_limit),
    ) -> Response:
        return json_response(
            user.tasks(overdue=overdue, for_user=for_user, entity=entity, include_done=include_done, limit=limit)
        )

    @router.get("/search", tags=["activity"], operation_id="search")
    def search(
        user: User, q: str, entity: str | None = None, limit: int = Query(20, ge=1, le=conf.max_limit)
    ) -> Response:
        return json_response(user.search(q, entity=entity, limit=limit))

    @router.get("/reports/funnel/{entity}", tags=["reports"], operation_id="funnel")
    def funnel(
        user: User,
        entity: str,
        pipeline: str | None = None,
        as_of: str | None = None,
        date_from: str | None = Query(None, alias="from"),
        date_to: str | None = Query(None, alias="to"),
        by: str | None = None,
    ) -> Response:
        return json_response(user.funnel(entity, pipeline, date_from=date_from, date_to=date_to, as_of=as_of, by=by))

    @router.get("/reports/group/{entity}", tags=["reports"], operation_id="group")
    def group(
        user: User,
        entity: str,
        by: str,
        sum: str | None = None,  # noqa: A002
        period: str | None = None,
        date: str | None = None,
        date_from: str | None = Query(None, alias="from"),
        date_to: str | None = Query(None, alias="to"),
        pipeline: str | None = None,
    ) -> Response:
        return json_response(
            user.report_group(
                entity, by, sum=sum, period=period, date=date, date_from=date_from, date_to=date_to, pipeline=pipeline
            )
        )

    for ent in model.entities.values():
        entity_routes(router, ent, conf, User)
    app.include_router(router)
