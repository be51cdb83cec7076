"""metacrm: a business described in YAML becomes a working CRM.

The public API is what this module exports; ``tests/test_api.py`` freezes it.
"""

from __future__ import annotations

import logging

from .errors import (
    AutomationError,
    ConflictError,
    DatabaseUnavailable,
    DataError,
    DuplicateWarning,
    ExpressionError,
    MetaCRMError,
    MigrationError,
    MissingExtra,
    ModelError,
    NotFound,
    PermissionDenied,
    Problem,
    SetupError,
    TransitionError,
    ValidationError,
)
from .model.loader import load_model
from .model.metamodel import Model

logging.getLogger(__name__).addHandler(logging.NullHandler())  # silent unless the host configures logging


def connect(
    model,
    url: str = "sqlite:///crm.db",
    *,
    user: str | None = None,
    busy_timeout: float | None = None,
    pool_size: int | None = None,
    max_overflow: int | None = None,
):
    """A CRM on the database at ``url`` for ``model`` (a Model or a path to one); see CRM.
    ``busy_timeout``: seconds a SQLite writer waits for another (overrides ``?timeout=``);
    ``pool_size``/``max_overflow``: the PostgreSQL connection pool of this process."""
    from .runtime.crm import connect as _connect

    return _connect(model, url, user=user, busy_timeout=busy_timeout, pool_size=pool_size, max_overflow=max_overflow)


def __getattr__(name: str):
    if name == "HIDDEN":  # what text output shows for the title of a record the user may not read
        from .runtime.titles import HIDDEN

        return HIDDEN
    raise AttributeError(f"module 'metacrm' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "AutomationError",
    "ConflictError",
    "DataError",
    "DatabaseUnavailable",
    "DuplicateWarning",
    "ExpressionError",
    "HIDDEN",
    "MetaCRMError",
    "MigrationError",
    "MissingExtra",
    "Model",
    "ModelError",
    "NotFound",
    "PermissionDenied",
    "Problem",
    "SetupError",
    "TransitionError",
    "ValidationError",
    "__version__",
    "connect",
    "load_model",
]
