"""``metacrm serve``: the HTTP API (and later the web app) on uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import refusals, usage_error
from .data_cmds import DEFAULT_DB, DEFAULT_MODEL, DbOpt, ModelOpt


def serve(
    host: Annotated[str, typer.Option("--host", help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="The port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 1,
    max_body: Annotated[
        int, typer.Option("--max-body", envvar="METACRM_MAX_BODY", help="The largest request body, in bytes.")
    ] = 1 << 20,
    pool_size: Annotated[
        int | None,
        typer.Option(
            "--pool-size",
            envvar="METACRM_POOL_SIZE",
            help="Connections per worker (no overflow; PostgreSQL or a SQLite file). Default: SQLAlchemy's 5 + 10 overflow.",
        ),
    ] = None,
    busy_timeout: Annotated[
        float | None,
        typer.Option(
            "--busy-timeout",
            envvar="METACRM_BUSY_TIMEOUT",
            help="SQLite: seconds a write waits for another before answering 503 (default 30).",
        ),
    ] = None,
    token_ttl: Annotated[
        float,
        typer.Option(
            "--token-ttl",
            envvar="METACRM_TOKEN_TTL",
            help="Seconds a valid token is trusted without a lookup (a revoked one works that long); 0: never.",
        ),
    ] = 5.0,
    max_upload: Annotated[
        int, typer.Option("--max-upload", envvar="METACRM_MAX_UPLOAD", help="The largest file upload, in bytes.")
    ] = 100 << 20,
    files: Annotated[
        str | None,
        typer.Option("--files", envvar="METACRM_FILES", help="Where attached files are kept (docs/files.md)."),
    ] = None,
    tenants: Annotated[
        str | None,
        typer.Option(
            "--tenants",
            envvar="METACRM_TENANTS",
            help="Serve every tenant of the database, named by the host's first label (host) or by /t/NAME/ (path).",
        ),
    ] = None,
    tenants_file: Annotated[
        str | None,
        typer.Option(
            "--tenants-file",
            envvar="METACRM_TENANTS_FILE",
            help="With --tenants: the model of each tenant (default ./tenants.yaml if there is one, else --model).",
        ),
    ] = None,
    read_db: Annotated[
        str | None,
        typer.Option(  # $METACRM_READ_DB is read below, after the root option (common.read_db)
            "--read-db",
            help="A streaming replica of --db: lists, search, reports and the board read from it "
            "(default: $METACRM_READ_DB; docs/scaling.md).",
        ),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Serve the HTTP API (/api/v1, docs/http.md) until SIGTERM or Ctrl-C."""
    import os

    from ..extras import WEB, import_extra
    from .common import load
    from .common import read_db as root_read_db

    read_db = read_db or root_read_db()  # `metacrm --read-db URL serve`, $METACRM_READ_DB

    if not 0 < port < 65536:
        usage_error(f"--port: {port} is not a port (1 to 65535)")
    if not 1 <= workers <= 64:
        usage_error(f"--workers: {workers} is not between 1 and 64")
    if max_body < 1 or max_upload < 1:
        usage_error(f"--max-{'body' if max_body < 1 else 'upload'}: give a positive number of bytes")
    if not 0 <= token_ttl <= 3600:
        usage_error(f"--token-ttl: {token_ttl} is not between 0 and 3600 seconds")
    os.environ["METACRM_MAX_BODY"] = str(max_body)
    os.environ["METACRM_TOKEN_TTL"] = str(token_ttl)
    os.environ["METACRM_MAX_UPLOAD"] = str(max_upload)
    if tenants is not None:
        from ..web.tenants import MODES

        if tenants not in MODES:
            usage_error(f"--tenants: {tenants!r} is not one of {', '.join(MODES)}")
        return _serve_tenants(
            tenants, tenants_file, model, db, host, port, workers, busy_timeout, pool_size, files, read_db
        )
    if tenants_file is not None:
        usage_error("--tenants-file: give --tenants host|path too (one tenant is served with --tenant NAME)")
    loaded = load(model)  # an invalid model: its problems and exit 2, before anything listens
    with refusals():  # a database that cannot be opened, or an option it has no use for: exit 2
        import_extra(WEB)
        from ..runtime.crm import connect
        from .common import current_tenant

        tenant = current_tenant()
        with connect(
            loaded, db, busy_timeout=busy_timeout, pool_size=pool_size, tenant=tenant, read_url=read_db
        ) as crm:
            recorded = crm.recorded_model()  # opens the database now, before anything listens
            if crm.read_engine is not None:
                from ..runtime.replica import replica_read

                with replica_read(crm.read_engine):  # and the replica: DatabaseUnavailable naming it
                    pass
    if recorded is None or recorded["sha256"] != loaded.sha256:
        typer.echo("metacrm: warning: the database needs `metacrm migrate`; requests answer 503 until then", err=True)
    del loaded
    os.environ.pop("METACRM_TENANTS", None)
    if files:
        os.environ["METACRM_FILES"] = files
    if tenant:
        os.environ["METACRM_TENANT"] = tenant
    else:
        os.environ.pop("METACRM_TENANT", None)
    for name, value in (
        ("METACRM_POOL_SIZE", pool_size),
        ("METACRM_BUSY_TIMEOUT", busy_timeout),
        ("METACRM_READ_DB", read_db),
    ):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(value)
    from ..web.server import serve as run

    typer.echo(f"metacrm: serving {model} on http://{host}:{port}/api/v1 ({workers} worker(s))", err=True)
    run(model, db, host=host, port=port, workers=workers)


def _serve_tenants(mode, tenants_file, model, db, host, port, workers, busy_timeout, pool_size, files, read_db) -> None:
    """``serve --tenants MODE``: every tenant of ``db`` in one process per worker (one pool).
    The tenants file and every model it names are read now: a bad one is exit 2 before anything
    listens, as a bad --model is."""
    import os

    from ..extras import WEB, import_extra
    from ..runtime import tenants as T
    from .common import current_tenant, load, missing_database

    if current_tenant() is not None:
        usage_error("--tenant and --tenants: serve one tenant (--tenant NAME) or all of them (--tenants host|path)")
    with refusals():
        import_extra(WEB)
        found = T.TenantMap.find(tenants_file)
        for path in sorted({*found.models.values(), *([found.default] if found.default else [])}):
            load(path)
        if found.default is None:
            if os.path.exists(model) or not found.models:
                load(model)
            else:  # no model for the tenants the file does not list: those answer 500 naming it
                typer.echo(
                    f"metacrm: warning: {model} does not exist; only the tenants of the tenants file are served",
                    err=True,
                )
        if (why := missing_database(db)) is not None:  # never create an empty file to find no tenants in
            usage_error(why)
        from ..runtime.engine import make_engine

        engine = make_engine(db, busy_timeout=busy_timeout, pool_size=pool_size)
        try:
            served = T.names(engine)  # opens the database now, before anything listens
            if read_db:  # and the replica: DatabaseUnavailable naming it (exit 2)
                from ..runtime.replica import open_replica, replica_read

                replica, owned = open_replica(engine, read_db, busy_timeout=busy_timeout)
                try:
                    with replica_read(replica):
                        pass
                finally:
                    if owned:
                        replica.dispose()
        finally:
            engine.dispose()
    os.environ["METACRM_TENANTS"] = mode
    if found.file:
        os.environ["METACRM_TENANTS_FILE"] = os.path.abspath(found.file)
    else:
        os.environ.pop("METACRM_TENANTS_FILE", None)
    os.environ.pop("METACRM_TENANT", None)
    if files:
        os.environ["METACRM_FILES"] = files
    for name, value in (
        ("METACRM_POOL_SIZE", pool_size),
        ("METACRM_BUSY_TIMEOUT", busy_timeout),
        ("METACRM_READ_DB", read_db),
    ):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(value)
    from ..web.server import serve as run

    where = f"http://TENANT.{host}:{port}/api/v1" if mode == "host" else f"http://{host}:{port}/t/TENANT/api/v1"
    typer.echo(f"metacrm: serving {len(served)} tenant(s) of {db} on {where} ({workers} worker(s))", err=True)
    run(os.path.abspath(model), db, host=host, port=port, workers=workers)


def register(app: typer.Typer) -> None:
    app.command()(serve)
