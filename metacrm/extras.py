"""Optional dependencies: what each extra brings, and the one-line error when it is missing.

``pip install metacrm`` is the core (SQLite, the command line, every report as text); the
extras add what only some users need::

    png       matplotlib        PNG charts (``report ... --format png``, ``funnel_png``)
    postgres  psycopg[binary]   PostgreSQL databases (``postgresql://`` URLs)
    web       fastapi, uvicorn  the HTTP API and the web app (``metacrm serve``)
    s3        boto3             attached files in an S3-compatible bucket (``--files s3://...``)
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtra

PNG = ("matplotlib", "png", "PNG charts need matplotlib")
POSTGRES = ("psycopg", "postgres", "PostgreSQL needs psycopg")
WEB = ("fastapi", "web", "the HTTP server needs FastAPI and uvicorn")
S3 = ("boto3", "s3", "files in an S3 bucket need boto3")


def import_extra(need: tuple[str, str, str]) -> ModuleType:
    """Import the module of an extra (``PNG``, ``POSTGRES``), or raise MissingExtra saying
    which extra to install: "PNG charts need matplotlib: pip install 'metacrm[png]'"."""
    module, extra, what = need
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = (exc.name or module).split(".")[0] == module
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        why = "" if missing else f" (it is installed but does not import: {first})"
        raise MissingExtra(f"{what}{why}: pip install 'metacrm[{extra}]'", extra=extra, module=module) from exc
