"""The one exception tree of metacrm, and the problem records model errors carry.

::

    MetaCRMError                    every error metacrm raises on purpose
    ├── ModelError                  the YAML model is invalid; .problems lists every Problem
    ├── DataError                   an operation on records was refused (nothing was written)
    │   ├── ValidationError         a field or link value is wrong
    │   │   └── ExpressionError     a filter or condition is malformed or names something unknown
    │   ├── TransitionError         a stage move is not allowed
    │   ├── PermissionDenied        the user may not do this
    │   ├── ConflictError           another writer changed the record first, or a deadlock, a
    │   │                           serialization failure or a lock wait ran out (.retryable)
    │   ├── NotFound                no such record
    │   ├── AutomationError         an automation's action failed: the triggering operation is refused
    │   ├── SpamError               a form submission filled the honeypot field
    │   └── RateLimited             too many form submissions from one address; .retry_after seconds
    ├── MigrationError              the database does not hold this model, or a migration failed
    ├── DatabaseUnavailable         the database URL is malformed, or names no database that opens
    │   └── ConnectionLost          the connection broke during an operation (retryable)
    └── SetupError                  this installation or its settings cannot do what was asked
        └── MissingExtra            an optional dependency is not installed; .extra names the pip extra

Library code raises these (wrapping yaml, jsonschema, SQLAlchemy errors with ``raise ... from``);
the CLI maps them to one line on stderr and an exit code. Nothing else should reach a user.

Exceptions are data: each carries structured attributes besides its message (``entity``,
``record_id``, ``field`` on every DataError; the versions of a ConflictError, the stages and
reasons of a TransitionError, ...; docs/errors.md lists them), ``retryable`` says whether the
same call may succeed when simply tried again, and every one pickles and unpickles to an
equal object of the same class (an error raised in a worker process reaches its parent whole).
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


def _rebuild(cls: type, args: tuple, state: dict) -> BaseException:
    """An exception of ``cls`` with these args and attributes, without calling its __init__
    (whose signature, keyword-only arguments included, then does not matter to pickle)."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class _Pickles:
    """Pickles an exception as its class, args and attributes (BaseException's own reduce
    calls ``cls(*args)``, which fails for an __init__ with required keyword arguments)."""

    __slots__ = ()

    def __reduce__(self):
        return _rebuild, (type(self), tuple(self.args), dict(vars(self)))  # type: ignore[attr-defined]


class MetaCRMError(_Pickles, Exception):
    """Root of every error metacrm raises on purpose.

    ``retryable``: the same call may succeed when tried again unchanged (a deadlock, a
    serialization failure, a lock wait that ran out, a lost connection); ``crm.retrying``
    retries those. False for everything the caller must change first."""

    retryable: bool = False


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
    """An operation on records was refused; nothing was written.

    ``entity``, ``record_id`` and ``field`` say where, when known (None otherwise)."""

    def __init__(self, message: str, *, entity: str | None = None, record_id=None, field: str | None = None):
        super().__init__(message)
        self.entity, self.record_id, self.field = entity, record_id, field


class ValidationError(DataError):
    """A value is wrong. ``issues`` lists every bad value (FieldIssue). ``entity`` and
    ``field`` default to those all the issues share."""

    def __init__(
        self,
        message: str,
        issues: list[FieldIssue] | tuple[FieldIssue, ...] = (),
        *,
        entity: str | None = None,
        record_id=None,
        field: str | None = None,
    ):
        self.issues = tuple(issues)
        entities = {issue.entity for issue in self.issues}
        fields = {issue.field for issue in self.issues}
        if entity is None and len(entities) == 1:
            entity = next(iter(entities))
        if field is None and len(fields) == 1:
            field = next(iter(fields))
        super().__init__(message, entity=entity, record_id=record_id, field=field)


class TransitionError(DataError):
    """A stage move is not allowed. ``allowed`` lists the possible moves and what each lacks;
    ``stage`` is the stage asked for, ``current`` the record's stage, ``reasons`` what the
    asked move lacks (empty when there is no such move)."""

    def __init__(
        self,
        message: str,
        allowed: list | tuple = (),
        *,
        entity: str | None = None,
        record_id=None,
        stage: str | None = None,
        current: str | None = None,
        reasons: list | tuple = (),
    ):
        super().__init__(message, entity=entity, record_id=record_id)
        self.allowed = tuple(allowed)
        self.stage, self.current, self.reasons = stage, current, tuple(reasons)


class PermissionDenied(DataError):
    """The acting user may not do this: ``user`` (login) may not ``action`` (read, create,
    update, delete, move, reassign, ...) on ``entity`` (record ``record_id`` when one)."""

    def __init__(
        self,
        message: str,
        *,
        action: str | None = None,
        user: str | None = None,
        entity: str | None = None,
        record_id=None,
    ):
        super().__init__(message, entity=entity, record_id=record_id)
        self.action, self.user = action, user


class ConflictError(DataError):
    """Another writer got there first. With ``retryable`` False (optimistic locking: the
    record's version is ``actual_version``, the caller had ``expected_version``; or the record
    moved meanwhile) read the record again before deciding; with ``retryable`` True (a deadlock,
    a serialization failure, a lock wait that ran out) nothing was written and the same call
    may simply be tried again (``crm.retrying``)."""

    def __init__(
        self,
        message: str,
        *,
        entity: str | None = None,
        record_id=None,
        field: str | None = None,
        expected_version: int | None = None,
        actual_version: int | None = None,
        retryable: bool = False,
    ):
        super().__init__(message, entity=entity, record_id=record_id, field=field)
        self.expected_version, self.actual_version = expected_version, actual_version
        self.retryable = bool(retryable)


class NotFound(DataError):
    """No record (or entity, pipeline, stage) of that name or id; ``entity`` and
    ``record_id`` name the record asked for, when it was one."""


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

    def __init__(self, message: str, position: int | None = None, issues=(), **where):
        self.position = position
        super().__init__(message, issues, **where)


__all__.append("ExpressionError")


class DuplicateWarning(_Pickles, UserWarning):
    """A record was stored although a ``warn`` duplicate rule matched it (a ``block`` rule
    refuses instead). ``entity``, ``index`` (in the input of create/create_many), ``field`` and
    ``existing`` (the matching record's id, None when it is another record of the same input
    or not readable by the user) say which.

    ``create_many`` warns once for the whole call, however many records matched: ``matches``
    holds one DuplicateWarning per match (the attributes above are the first one's); a single
    create's warning is its own only match."""

    def __init__(
        self,
        message: str,
        *,
        entity: str,
        index: int,
        field: str,
        existing: int | None,
        matches: tuple[DuplicateWarning, ...] = (),
    ):
        super().__init__(message)
        self.entity, self.index, self.field, self.existing = entity, index, field, existing
        self.matches = matches or (self,)

    @classmethod
    def of_many(cls, entity: str, matches: list[DuplicateWarning]) -> DuplicateWarning:
        """One warning for the matches of a ``create_many`` call: the first few named."""
        first = matches[0]
        shown = "; ".join(str(m) for m in matches[:3])
        more = f" (and {len(matches) - 3} more)" if len(matches) > 3 else ""
        count = "1 match" if len(matches) == 1 else f"{len(matches)} matches"
        return cls(
            f"{count} of a warn duplicate rule, stored: {shown}{more}",
            entity=entity,
            index=first.index,
            field=first.field,
            existing=first.existing,
            matches=tuple(matches),
        )


__all__.append("DuplicateWarning")


class AutomationError(DataError):
    """An automation's action failed (or its chain ran too deep); the whole operation that
    triggered it was rolled back. ``automation`` names it, ``action`` is the 1-based index of
    the failing action (None for a chain too deep), ``chain`` the automations that led to it,
    ``entity`` and ``record_id`` the record it acted for; ``retryable`` when the action failed
    on a retryable error (a deadlock, a lost connection)."""

    def __init__(
        self,
        message: str,
        *,
        automation: str,
        action: int | None = None,
        chain: tuple = (),
        entity: str | None = None,
        record_id=None,
        retryable: bool = False,
    ):
        super().__init__(message, entity=entity, record_id=record_id)
        self.automation, self.action, self.chain = automation, action, tuple(chain)
        self.retryable = bool(retryable)


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


class ConnectionLost(DatabaseUnavailable):
    """The connection to the database broke during an operation (the server restarted or
    ended the session, the network dropped): the operation's transaction was not committed.
    Retryable: a new operation opens a new connection."""

    retryable = True


__all__ += ["ConnectionLost", "DatabaseUnavailable"]


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


__all__ += ["MissingExtra", "SetupError"]
