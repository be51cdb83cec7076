"""metacrm over HTTP: ``create_app(crm)`` is an ASGI application (FastAPI) serving the
model's resources under ``/api/v1`` (see docs/http.md); ``metacrm serve`` runs it on uvicorn.

FastAPI is the ``[web]`` extra: importing this package without it raises MissingExtra."""

from __future__ import annotations

from typing import Any


def create_app(crm, **settings: Any):
    """The ASGI app serving ``crm`` (a metacrm CRM acting as the system user); settings:
    ``max_body`` (bytes, default 1 MiB), ``max_limit`` (rows per page, default 500),
    ``token_ttl`` (seconds a valid token is trusted without a lookup, default 5; 0: never),
    ``max_upload`` (bytes of a file upload, default 100 MiB)."""
    from ..extras import WEB, import_extra

    import_extra(WEB)
    from .app import build_app

    return build_app(crm, **settings)


__all__ = ["create_app"]
