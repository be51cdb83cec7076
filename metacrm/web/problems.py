"""Errors as RFC 9457 problem details (``application/problem+json``).

Every refusal of the library has a status and a ``type`` slug named after its error class
(``/problems/validation-error``); the document carries ``title``, ``status``, ``detail`` (the
library's one-line message) and, where it has them, ``errors: [{loc, field, message, type}]``
(every bad field of every row), ``position`` (of a bad expression), ``allowed`` (a refused
move's possible stages and what each lacks). An error that is not a refusal is a 500 carrying
only a request id: the traceback goes to the server's log under that id.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.responses import Response

from .. import errors as E

PROBLEM = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    412: "Precondition failed",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class HTTPProblem(Exception):
    """A problem the web layer itself raises (401, 412, 413, 415, bad JSON...)."""

    def __init__(self, status: int, slug: str, detail: str, *, headers: dict | None = None, **extra: Any):
        super().__init__(detail)
        self.status, self.slug, self.detail, self.headers, self.extra = status, slug, detail, headers or {}, extra


def slug(cls: type) -> str:
    """``ValidationError`` -> ``validation-error``: the problem type of a library error."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", cls.__name__).lower()


def problem(status: int, kind: str, detail: str, *, headers: dict | None = None, **extra: Any) -> Response:
    doc = {"type": f"/problems/{kind}", "title": _TITLES.get(status, "Error"), "status": status, "detail": detail}
    doc.update({k: v for k, v in extra.items() if v is not None})
    body = json.dumps(doc, ensure_ascii=False, default=str)
    return Response(body, status_code=status, media_type=PROBLEM, headers=headers)


def _issues(exc: E.ValidationError) -> list[dict]:
    out = []
    for issue in exc.issues:
        loc: list = []
        if issue.index is not None:
            loc.append(issue.index)
        if issue.field:
            loc.append(issue.field)
        out.append(
            {"loc": loc, "field": issue.field, "entity": issue.entity, "message": issue.message, "type": "invalid"}
        )
    return out


def unique_issues(exc: E.ValidationError) -> list[E.FieldIssue]:
    """The issues of a refusal that are all values of unique fields a stored record holds
    already (not duplicates inside a batch); empty when there is any other issue."""
    stored = [
        i
        for i in exc.issues
        if i.field
        and (
            i.message == "is already used"
            or i.message.endswith(f"is already used by another {i.entity}")
            or re.search(rf"is already used by {re.escape(i.entity)} \d+$", i.message)
        )
    ]
    return stored if stored and len(stored) == len(exc.issues) else []


def unique_conflict(user, exc: E.ValidationError) -> Response:
    """409 for a value a unique field of a stored record holds: ``existing`` names that record
    (id and title) when the acting user may read it; one they may not read stays unnamed (the
    refusal itself cannot hide that the value is taken)."""
    existing, errors = [], _issues(exc)
    for issue, error in zip(exc.issues, errors, strict=True):
        error["type"] = "unique"
        found = []
        if issue.value is not None:
            found = user.find(issue.entity, f"{issue.field} = :value", {"value": issue.value}, limit=1)
        if found:
            title = user.titles(issue.entity, [found[0]["id"]]).get(found[0]["id"])
            existing.append({"entity": issue.entity, "id": found[0]["id"], "title": title})
            error["existing"] = existing[-1]
    detail = str(exc)
    if existing:
        first = existing[0]
        detail = f"{detail.split(' is already used')[0]} is already used by {first['entity']} {first['id']}"
        detail += f" ({first['title']})" if first["title"] else ""
    return problem(409, "unique-conflict", detail, errors=errors, existing=existing or None)


def from_error(exc: E.MetaCRMError, *, method: str = "POST") -> Response:
    """The problem document of a library error, answering a request of ``method``. Refused
    values are 422 in a body; a GET has none, so there they are its query parameters (400); a
    DELETE has none either, so there the refusal is the model's rules against the record's
    links (on_delete: restrict, a required link): a conflict (409)."""
    kind = slug(type(exc))
    detail = str(exc)
    if isinstance(exc, E.ModelError):
        return problem(500, kind, "the server's model is invalid")  # serve refuses to start on one
    if isinstance(exc, E.ExpressionError):
        return problem(400, kind, detail, position=exc.position, errors=_issues(exc) or None)
    if isinstance(exc, E.ValidationError):
        status = {"GET": 400, "HEAD": 400, "DELETE": 409}.get(method, 422)
        return problem(status, kind, detail, errors=_issues(exc))
    if isinstance(exc, E.TransitionError):
        return problem(409, kind, detail, allowed=list(exc.allowed))
    if isinstance(exc, E.NotFound):
        return problem(404, kind, detail)
    if isinstance(exc, E.PermissionDenied):
        return problem(403, kind, detail)
    if isinstance(exc, E.ConflictError):
        if getattr(exc, "retryable", False) or "locked" in detail:
            return problem(503, kind, detail, headers={"Retry-After": "1"})
        return problem(409, kind, detail)
    if isinstance(exc, E.MigrationError):
        return problem(503, "migration-needed", detail, headers={"Retry-After": "60"})
    if isinstance(exc, E.DatabaseUnavailable):
        return problem(503, kind, detail, headers={"Retry-After": "5"})
    if isinstance(exc, E.SetupError):  # the server's settings lack something (a file store)
        return problem(503, kind, detail)
    if isinstance(exc, E.RateLimited):
        return problem(429, kind, detail, headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, E.AutomationError):
        return problem(422, kind, detail)
    if isinstance(exc, E.DataError):
        return problem(422, kind, detail)
    return problem(400, kind, detail)
