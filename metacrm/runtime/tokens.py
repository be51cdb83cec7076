"""API tokens: a random secret shown once, stored only as its SHA-256.

A token acts as one user (``metacrm token create LOGIN``): the HTTP API looks the bearer
token's hash up, refuses a revoked or expired one, and runs the request as that user, so roles
and row-level access apply exactly as in the library. The secret has 256 bits of entropy, so a
plain (unsalted) SHA-256 is the right store: it cannot be guessed back, and the lookup stays
one indexed equality. ``last_used_at`` is written at most once a minute per token (a write per
request would serialise readers on SQLite).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import threading

from sqlalchemy import insert, select, update
from sqlalchemy.exc import DBAPIError

from ..errors import MetaCRMError, NotFound, PermissionDenied, ValidationError
from ..storage.types import now_utc
from .engine import reading, writing

PREFIX = "mcrm_"
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_TOUCH_EVERY = 60.0  # seconds between two writes of a token's last_used_at
# (database, tenant, token id) -> when its last_used_at was last written: token ids are per
# database and per tenant (every tenant's first token is 1), so the id alone would let one
# tenant's use hold back the stamp of another's token
_touched: dict[tuple[str, str | None, int], float] = {}
_touched_lock = threading.Lock()


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def parse_expiry(text: str | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """``90d``, ``12h``, ``30m``, ``2w``, ``1y`` from now; ``never`` (or None): no expiry."""
    if text is None or text.strip().lower() == "never":
        return None
    match = re.fullmatch(r"\s*(\d{1,6})\s*([mhdwy])\s*", text.lower())
    if not match or int(match.group(1)) == 0:
        raise ValidationError(f"token: expiry {text!r} is not a duration such as 30m, 12h, 90d, 2w, 1y or 'never'")
    return (now or now_utc()) + dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _system_only(crm, what: str) -> None:
    if crm.user is not None:
        raise PermissionDenied(
            f"user '{crm.user}' may not {what}: tokens are managed by the operator (system user)",
            action=what,
            user=crm.user,
        )


def _table(crm, conn):
    table = crm.storage.token_table
    table.create(conn, checkfirst=True)  # a database migrated by an older metacrm gets it here
    return table


def _row(row) -> dict:
    return {
        "id": row["id"],
        "login": row["login"],
        "name": row["name"],
        "created_at": row["created_at"],
        "last_used_at": row["last_used_at"],
        "expires_at": row["expires_at"],
        "revoked_at": row["revoked_at"],
    }


def create_token(crm, login: str, *, name: str | None = None, expires: str | None = "90d") -> dict:
    """A new token for ``login`` (an existing user): the returned ``token`` is the only copy of
    the secret."""
    _system_only(crm, "create tokens")
    crm._ready()
    crm.user_info(login)  # NotFound names the login
    if name is not None and len(name) > 100:
        raise ValidationError("token: a name has at most 100 characters")
    expires_at = parse_expiry(expires)
    secret = PREFIX + secrets.token_urlsafe(32)
    values = {"login": login, "name": name, "hash": digest(secret), "created_at": now_utc(), "expires_at": expires_at}
    with crm._writing() as conn:
        table = _table(crm, conn)
        token_id = conn.execute(insert(table).values(values).returning(table.c.id)).scalar_one()
    return {"id": token_id, "token": secret, **{k: v for k, v in values.items() if k != "hash"}}


def list_tokens(crm, login: str | None = None) -> list[dict]:
    _system_only(crm, "list tokens")
    crm._ready()
    with crm._writing() as conn:
        table = _table(crm, conn)
        query = select(table).order_by(table.c.id)
        if login is not None:
            query = query.where(table.c.login == login)
        return [_row(r) for r in conn.execute(query).mappings()]


def revoke_token(crm, token_id: int) -> dict:
    _system_only(crm, "revoke tokens")
    crm._ready()
    with crm._writing() as conn:
        table = _table(crm, conn)
        row = conn.execute(select(table).where(table.c.id == token_id)).mappings().first()
        if row is None:
            raise NotFound(f"token {token_id} not found (metacrm token list shows them)", record_id=token_id)
        if row["revoked_at"] is None:
            conn.execute(update(table).where(table.c.id == token_id).values(revoked_at=now_utc()))
        return _row(conn.execute(select(table).where(table.c.id == token_id)).mappings().one())


def authenticate(crm, secret: str | None, now: dt.datetime | None = None) -> str | None:
    """The login a bearer token acts as; None for a missing, unknown, revoked or expired token
    (the caller answers all of them alike)."""
    if not secret or not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    now = now or now_utc()
    table = crm.storage.token_table
    try:
        with reading(crm.engine) as conn:
            row = conn.execute(select(table).where(table.c.hash == digest(secret))).mappings().first()
    except DBAPIError:  # no token table yet (a database older than tokens): no token can be valid
        return None
    if row is None or row["revoked_at"] is not None:
        return None
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return None
    _touch(crm, row["id"], now)
    return row["login"]


def _touch(crm, token_id: int, now: dt.datetime) -> None:
    from .tenants import tenant_of

    stamp = now.timestamp()
    key = (crm.engine.url.render_as_string(hide_password=True), tenant_of(crm.engine), token_id)
    with _touched_lock:
        if stamp - _touched.get(key, float("-inf")) < _TOUCH_EVERY:
            return
        _touched[key] = stamp
    table = crm.storage.token_table
    try:
        with writing(crm.engine) as conn:
            conn.execute(update(table).where(table.c.id == token_id).values(last_used_at=now))
    except (DBAPIError, MetaCRMError):  # a busy database: the stamp is a convenience, never worth a failed request
        with _touched_lock:
            _touched.pop(key, None)


__all__ = ["authenticate", "create_token", "digest", "list_tokens", "parse_expiry", "revoke_token"]
