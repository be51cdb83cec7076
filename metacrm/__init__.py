"""metacrm: a business described in YAML becomes a working CRM.

The public API is what this module exports; ``tests/test_cli_model.py`` freezes it. The
package is typed (``py.typed``): the documents the CRM returns are TypedDicts in
:mod:`metacrm.types`.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from .errors import (
    AutomationError,
    ConflictError,
    ConnectionLost,
    DatabaseUnavailable,
    DataError,
    DuplicateWarning,
    ExpressionError,
    FieldIssue,
    MetaCRMError,
    MigrationError,
    MissingExtra,
    ModelError,
    NotFound,
    PermissionDenied,
    Problem,
    RateLimited,
    SetupError,
    SpamError,
    TransitionError,
    ValidationError,
)
from .model.loader import load_model
from .model.metamodel import Model

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .runtime.crm import CRM
    from .runtime.titles import HIDDEN

logging.getLogger(__name__).addHandler(logging.NullHandler())  # silent unless the host configures logging


def connect(
    model: Model | str | os.PathLike[str],
    url_or_engine: str | Engine = "sqlite:///crm.db",
    *,
    user: str | None = None,
    busy_timeout: float | None = None,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    files: str | os.PathLike[str] | None = None,
    read_url: str | os.PathLike[str] | Engine | None = None,
    tenant: str | None = None,
) -> CRM:
    """A CRM on the database at ``url_or_engine`` (a URL or the host's SQLAlchemy Engine) for
    ``model`` (a Model or a path to one); ``files``: where attached files are kept (a directory
    or ``s3://BUCKET/PREFIX``, docs/files.md); ``read_url``: a streaming replica the plain
    reads (lists, search, reports, the board) go to; ``tenant``: that tenant's CRM (both
    docs/scaling.md); see metacrm.runtime.crm.connect and docs/embedding.md."""
    from .runtime.crm import connect as _connect

    return _connect(
        model,
        url_or_engine,
        user=user,
        busy_timeout=busy_timeout,
        pool_size=pool_size,
        max_overflow=max_overflow,
        files=files,
        read_url=read_url,
        tenant=tenant,
    )


def __getattr__(name: str) -> Any:
    if name == "CRM":  # imported on first use: `import metacrm` stays light (no SQLAlchemy)
        from .runtime.crm import CRM

        return CRM
    if name == "HIDDEN":  # what text output shows for the title of a record the user may not read
        from .runtime.titles import HIDDEN

        return HIDDEN
    raise AttributeError(f"module 'metacrm' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "AutomationError",
    "CRM",
    "ConflictError",
    "ConnectionLost",
    "DataError",
    "DatabaseUnavailable",
    "DuplicateWarning",
    "ExpressionError",
    "FieldIssue",
    "HIDDEN",
    "MetaCRMError",
    "MigrationError",
    "MissingExtra",
    "Model",
    "ModelError",
    "NotFound",
    "PermissionDenied",
    "Problem",
    "RateLimited",
    "SetupError",
    "SpamError",
    "TransitionError",
    "ValidationError",
    "__version__",
    "connect",
    "load_model",
]
