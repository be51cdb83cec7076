"""The one exception tree of metacrm, and the problem records model errors carry.

::

    MetaCRMError                    every error metacrm raises on purpose
    ├── ModelError                  the YAML model is invalid; .problems lists every Problem
    ├── DataError                   an operation on records was refused (nothing was written)
    │   ├── ValidationError         a field or link value is wrong
    │   │   └── ExpressionError     a filter or condition is malformed or names something unknown
    │   ├── TransitionError         a stage move is not allowed
    │   ├── PermissionDenied        the user may not do this
    │   ├── ConflictError           another writer changed the record first
    │   ├── NotFound                no such record
    │   ├── AutomationError         an automation's action failed: the triggering operation is refused
    │   ├── SpamError               a form submission filled the honeypot field
    │   └── RateLimited             too many form submissions from one address; .retry_after seconds
    ├── MigrationError              the database does not hold this model, or a migration failed
    ├── DatabaseUnavailable         the database URL is malformed, or names no database that opens
    └── SetupError                  this installation or its settings cannot do what was asked
        └── MissingExtra            an optional dependency is not installed; .extra names the pip extra

Library code raises these (wrapping yaml, jsonschema, SQLAlchemy errors with ``raise ... from``);
the CLI maps them to one line on stderr and an exit code. Nothing else should reach a user.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or suspicious) in a model, located in its source file.

    ``type`` is a stable slug tests and tools can rely on (``link.unknown_target``);
    ``loc`` is the path inside the merged model document (``("entities", "deal", "links")``).
    """

    type: str
    message: str
    file: str = "<model>"
    line: int = 0
    col: int = 0
    severity: str = "error"  # or "warning"
    loc: tuple = ()
    hint: str | None = None

    def format(self) -> str:
        text = f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": self.severity,
            "type": self.type,
            "message": self.message,
            "hint": self.hint,
            "loc": [str(part) for part in self.loc],
        }

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class MetaCRMError(Exception):
    """Root of every error metacrm raises on purpose."""


class ModelError(MetaCRMError):
    """The model is invalid. ``problems`` holds every problem found (errors and warnings)."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]):
        self.problems = tuple(problems)
        errors = [p for p in self.problems if p.is_error]
        first = errors[0].format() if errors else "invalid model"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.is_error)


@dataclass(frozen=True, slots=True)
class FieldIssue:
    """One bad value in a record: where (entity, record index, field), what, and why."""

    entity: str
    field: str | None
    message: str
    value: object = None
    index: int | None = None

    def format(self) -> str:
        where = self.entity if self.field is None else f"{self.entity}.{self.field}"
        if self.index is not None:
            where = f"record {self.index}: {where}"
        return f"{where}: {self.message}"


class DataError(MetaCRMError):
    """An operation on records was refused; nothing was written."""


class ValidationError(DataError):
    """A value is wrong. ``issues`` lists every bad value (FieldIssue)."""

    def __init__(self, message: str, issues: list[FieldIssue] | tuple[FieldIssue, ...] = ()):
        self.issues = tuple(issues)
        super().__init__(message)


class TransitionError(DataError):
    """A stage move is not allowed. ``allowed`` lists the possible moves and what each lacks."""

    def __init__(self, message: str, allowed: list | tuple = ()):
        self.allowed = tuple(allowed)
        super().__init__(message)


class PermissionDenied(DataError):
    """The acting user may not do this."""


class ConflictError(DataError):
    """Another writer changed the record first (optimistic locking)."""


class NotFound(DataError):
    """No record (or entity, pipeline, stage) of that name or id."""


class MigrationError(MetaCRMError):
    """The database holds another model version, or a migration failed (and was rolled back)."""


__all__ = [
    "ConflictError",
    "DataError",
    "FieldIssue",
    "MetaCRMError",
    "MigrationError",
    "ModelError",
    "NotFound",
    "PermissionDenied",
    "Problem",
    "TransitionError",
    "ValidationError",
]


class ExpressionError(ValidationError):
    """An expression (filter, guard, condition) is malformed or names something unknown.

    ``position`` is the 1-based column in the expression text where the problem is, if known.
    """

    def __init__(self, message: str, position: int | None = None, issues=()):
        self.position = position
        super().__init__(message, issues)


__all__.append("ExpressionError")


class DuplicateWarning(UserWarning):
    """A record was stored although a ``warn`` duplicate rule matched it (a ``block`` rule
    refuses instead). ``entity``, ``index`` (in the input of create/create_many), ``field`` and
    ``existing`` (the matching record's id, None when it is another record of the same input
    or not readable by the user) say which."""

    def __init__(self, message: str, *, entity: str, index: int, field: str, existing: int | None):
        super().__init__(message)
        self.entity, self.index, self.field, self.existing = entity, index, field, existing


__all__.append("DuplicateWarning")


class AutomationError(DataError):
    """An automation's action failed (or its chain ran too deep); the whole operation that
    triggered it was rolled back. ``automation`` names it, ``action`` is the 1-based index of
    the failing action (None for a chain too deep), ``chain`` the automations that led to it."""

    def __init__(self, message: str, *, automation: str, action: int | None = None, chain: tuple = ()):
        super().__init__(message)
        self.automation, self.action, self.chain = automation, action, tuple(chain)


__all__.append("AutomationError")


class SpamError(DataError):
    """A form submission filled the form's honeypot field (a hidden field people leave empty):
    it is dropped, nothing is written."""


class RateLimited(DataError):
    """Too many submissions of a form from one address within its ``rate`` period;
    ``retry_after`` is the number of seconds until one more is accepted."""

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


__all__ += ["RateLimited", "SpamError"]


class DatabaseUnavailable(MetaCRMError):
    """The database cannot be opened: a malformed or unsupported URL, a SQLite file in a
    missing directory or that is not a database, a PostgreSQL server that does not answer or
    has no such database. The message names the URL (without its password)."""


__all__.append("DatabaseUnavailable")


class SetupError(MetaCRMError):
    """This installation or its settings cannot do what was asked: an optional dependency is
    missing (MissingExtra) or a setting (an environment variable) has a bad value. The command
    line exits 2 for these, as for bad usage."""


class MissingExtra(SetupError):
    """An optional dependency is not installed. ``extra`` names the extra that brings it
    (``pip install 'metacrm[png]'``), ``module`` the module that could not be imported."""

    def __init__(self, message: str, *, extra: str, module: str):
        super().__init__(message)
        self.extra, self.module = extra, module

    def __reduce__(self):
        return _missing_extra, (str(self), self.extra, self.module)


def _missing_extra(message: str, extra: str, module: str) -> MissingExtra:
    return MissingExtra(message, extra=extra, module=module)


__all__ += ["MissingExtra", "SetupError"]
