"""metacrm: a business described in YAML becomes a working CRM.

The public API is what this module exports; ``tests/test_api.py`` freezes it.
"""

from __future__ import annotations

from .errors import (
    ConflictError,
    DataError,
    MetaCRMError,
    MigrationError,
    ModelError,
    NotFound,
    PermissionDenied,
    Problem,
    TransitionError,
    ValidationError,
)
from .model.loader import load_model
from .model.metamodel import Model

__version__ = "0.1.0"

__all__ = [
    "ConflictError",
    "DataError",
    "MetaCRMError",
    "MigrationError",
    "Model",
    "ModelError",
    "NotFound",
    "PermissionDenied",
    "Problem",
    "TransitionError",
    "ValidationError",
    "__version__",
    "load_model",
]
