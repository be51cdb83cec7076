"""``metacrm serve``: the app on uvicorn. Workers are separate processes, so each builds its
own app from the environment (``METACRM_MODEL``, ``METACRM_DB``, and the optional
``METACRM_TENANTS``, ``METACRM_TENANTS_FILE``, ``METACRM_READ_DB``, ``METACRM_MAX_BODY``,
``METACRM_POOL_SIZE``, ``METACRM_BUSY_TIMEOUT``, ``METACRM_TOKEN_TTL``,
``METACRM_MAX_UPLOAD``; the CRM reads ``METACRM_FILES`` itself):
:func:`from_env` is the factory uvicorn calls in each of them, so a PostgreSQL pool is per
worker."""

from __future__ import annotations

import os
import signal


def _env(name: str, kind: type):
    value = os.environ.get(name, "").strip()
    return kind(value) if value else None


def from_env():
    """The app for the model and database the environment names (one CRM per process), or with
    ``METACRM_TENANTS`` (host or path) the dispatcher serving every tenant of the database
    through this process's one engine (``METACRM_TENANTS_FILE``: each tenant's model)."""
    from ..model.loader import load_model
    from ..runtime.crm import CRM
    from ..runtime.engine import make_engine
    from . import create_app

    engine = make_engine(
        os.environ["METACRM_DB"],
        busy_timeout=_env("METACRM_BUSY_TIMEOUT", float),
        pool_size=_env("METACRM_POOL_SIZE", int),
    )
    settings: dict = {"max_body": int(os.environ.get("METACRM_MAX_BODY", 1 << 20))}
    if (ttl := _env("METACRM_TOKEN_TTL", float)) is not None:
        settings["token_ttl"] = ttl
    if (upload := _env("METACRM_MAX_UPLOAD", int)) is not None:
        settings["max_upload"] = upload
    if mode := os.environ.get("METACRM_TENANTS", "").strip():  # `metacrm serve --tenants host|path`
        from ..runtime.tenants import TenantMap
        from .tenants import TenantDispatcher

        models = TenantMap.find(os.environ.get("METACRM_TENANTS_FILE") or None)
        fallback = os.environ.get("METACRM_MODEL")
        read_db = os.environ.get("METACRM_READ_DB", "").strip() or None
        return TenantDispatcher(
            engine,
            mode,
            models=models,
            model=fallback,
            read_url=read_db,
            pool_size=_env("METACRM_POOL_SIZE", int),
            busy_timeout=_env("METACRM_BUSY_TIMEOUT", float),
            **settings,
        )
    model = load_model(os.environ["METACRM_MODEL"])
    if tenant := os.environ.get("METACRM_TENANT"):  # `metacrm serve --tenant NAME`: that tenant's CRM
        from ..runtime.crm import _tenant_engine

        engine = _tenant_engine(engine, True, tenant)[0]
    crm = CRM(model, engine)
    if read_db := os.environ.get("METACRM_READ_DB", "").strip():  # serve --read-db: a pool per worker, the same tenant
        from ..runtime.replica import open_replica

        crm.read_engine, crm._owns_read_engine = open_replica(
            engine, read_db, busy_timeout=_env("METACRM_BUSY_TIMEOUT", float), pool_size=_env("METACRM_POOL_SIZE", int)
        )
    return create_app(crm, **settings)


def serve(model: str, db: str, *, host: str, port: int, workers: int, log_level: str = "info") -> None:
    import uvicorn

    os.environ["METACRM_MODEL"] = model
    os.environ["METACRM_DB"] = db
    # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again for the handler
    # it found: a quiet one here makes a stop on request exit 0 (not "killed by SIGTERM")
    stopped: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: stopped.append(number))
    uvicorn.run(
        "metacrm.web.server:from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        timeout_graceful_shutdown=30,  # SIGTERM: in-flight requests finish (for up to 30 s)
        proxy_headers=False,
    )
