"""Passwords and sessions of the browser app (docs/web.md).

``metacrm user passwd LOGIN`` stores an argon2id hash (argon2-cffi, its default parameters) in
``metacrm_password``. Signing in creates a session: a random secret goes to the browser as a
cookie, the database keeps only its SHA-256 (as tokens do), the login, a CSRF token and an
absolute expiry. Signing out deletes the row; changing a password ends the login's sessions.
Like tokens, these are the operator's business: only the system user manages passwords.
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import DBAPIError

from ..errors import MissingExtra, ValidationError
from ..storage.types import now_utc
from .engine import reading, writing
from .tokens import _system_only, digest

MIN_LENGTH = 8
MAX_LENGTH = 1000
SESSION_TTL = 12 * 3600.0  # seconds a session lasts from sign-in


def _hasher():
    try:
        from argon2 import PasswordHasher
    except ImportError:  # pragma: no cover - the [web] extra installs it
        raise MissingExtra(
            "passwords need argon2-cffi: pip install 'metacrm[web]'", extra="web", module="argon2"
        ) from None
    return PasswordHasher()  # argon2id, RFC 9106's low-memory profile


def _tables(crm, conn):
    for table in (crm.storage.password_table, crm.storage.session_table):
        table.create(conn, checkfirst=True)  # a database migrated by an older metacrm gets them here


def check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise ValidationError(f"password: at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise ValidationError(f"password: at most {MAX_LENGTH} characters")


def set_password(crm, login: str, password: str) -> dict:
    """Store ``login``'s password (an existing user) as an argon2id hash; the login's open
    sessions end."""
    _system_only(crm, "set passwords")
    crm._ready()
    crm.user_info(login)  # NotFound names the login
    check_password(password)
    hashed = _hasher().hash(password)
    now = now_utc()
    with crm._writing() as conn:
        _tables(crm, conn)
        table = crm.storage.password_table
        done = conn.execute(update(table).where(table.c.login == login).values(hash=hashed, updated_at=now))
        if done.rowcount == 0:
            conn.execute(insert(table).values(login=login, hash=hashed, updated_at=now))
        sessions = crm.storage.session_table
        conn.execute(delete(sessions).where(sessions.c.login == login))
    return {"login": login, "updated_at": now}


def verify_password(crm, login: str, password: str) -> bool:
    """Whether ``password`` is ``login``'s: False for an unknown login or one without a
    password (a hash is still computed, so the answer takes as long either way)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = _hasher()
    table = crm.storage.password_table
    row = None
    if isinstance(login, str) and 0 < len(login) <= 100 and isinstance(password, str) and len(password) <= MAX_LENGTH:
        try:
            with reading(crm.engine) as conn:
                row = conn.execute(select(table.c.hash).where(table.c.login == login)).first()
        except DBAPIError:  # no password table yet: nobody has a password
            row = None
    if row is not None and login in crm.disabled_users():  # metacrm user disable: no sign-in
        row = None
    if row is None:
        hasher.hash(password if isinstance(password, str) else "")
        return False
    try:
        return hasher.verify(row[0], password)
    except (VerificationError, InvalidHashError):
        return False


def start_session(crm, login: str, ttl: float = SESSION_TTL) -> dict:
    """A new session for ``login``: ``{"secret", "csrf", "expires_at"}`` (the secret is the
    cookie's value; only its hash is stored)."""
    secret = secrets.token_urlsafe(32)
    now = now_utc()
    values = {
        "hash": digest(secret),
        "login": login,
        "csrf": secrets.token_urlsafe(32),
        "created_at": now,
        "expires_at": now + dt.timedelta(seconds=ttl),
    }
    with writing(crm.engine) as conn:
        _tables(crm, conn)
        table = crm.storage.session_table
        conn.execute(delete(table).where(table.c.expires_at <= now))  # sweep the expired ones
        conn.execute(insert(table).values(values))
    return {"secret": secret, "csrf": values["csrf"], "expires_at": values["expires_at"]}


def find_session(crm, secret: str | None, now: dt.datetime | None = None) -> dict | None:
    """``{"login", "csrf", "expires_at"}`` of a live session; None for a missing, unknown or
    expired one."""
    if not secret or len(secret) > 200:
        return None
    table = crm.storage.session_table
    try:
        with reading(crm.engine) as conn:
            row = conn.execute(select(table).where(table.c.hash == digest(secret))).mappings().first()
    except DBAPIError:
        return None
    if row is None or row["expires_at"] <= (now or now_utc()):
        return None
    return {"login": row["login"], "csrf": row["csrf"], "expires_at": row["expires_at"]}


def end_session(crm, secret: str | None) -> None:
    if not secret or len(secret) > 200:
        return
    table = crm.storage.session_table
    with writing(crm.engine) as conn:
        conn.execute(delete(table).where(table.c.hash == digest(secret)))


__all__ = ["check_password", "end_session", "find_session", "set_password", "start_session", "verify_password"]
