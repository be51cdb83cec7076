"""A user's own settings, kept in ``metacrm_preference`` (docs/web.md): the browser app's
interface language and time zone, the columns of each list. One row per login and key; the
value is any JSON document of at most ``MAX_BYTES``. A user reads and writes only their own
settings (the acting user of the CRM object); the system user has none.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import DBAPIError

from ..errors import ValidationError
from ..storage.types import now_utc
from .engine import reading, writing

MAX_BYTES = 10_000
KEY = re.compile(r"[a-z][a-z0-9_.:-]{0,99}")


def _table(crm):
    return crm.storage.preference_table


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise ValidationError(f"preference: {key!r} is not a key (lower-case letters, digits, _ . : -; at most 100)")


def preferences(crm) -> dict[str, Any]:
    """Every setting of the acting user, ``{key: value}`` ({} for the system user or before
    any is stored)."""
    login = crm.user
    if login is None:
        return {}
    table = _table(crm)
    try:
        with reading(crm.engine) as conn:
            rows = conn.execute(select(table.c.key, table.c.value).where(table.c.login == login)).all()
    except DBAPIError:  # an older database without the table: nothing stored yet
        return {}
    return {key: value for key, value in rows}


def preference(crm, key: str, default: Any = None) -> Any:
    _check_key(key)
    return preferences(crm).get(key, default)


def set_preference(crm, key: str, value: Any) -> Any:
    """Store the acting user's ``key`` (``None`` removes it); returns the value."""
    _check_key(key)
    login = crm.user
    if login is None:
        raise ValidationError("preference: the system user has no settings; act as a user (crm.as_user)")
    try:
        size = len(json.dumps(value, ensure_ascii=False).encode())
    except (TypeError, ValueError):
        raise ValidationError(f"preference {key}: the value must be JSON (text, numbers, lists, objects)") from None
    if size > MAX_BYTES:
        raise ValidationError(f"preference {key}: {size} bytes, at most {MAX_BYTES}")
    table = _table(crm)
    now = now_utc()
    with writing(crm.engine) as conn:
        table.create(conn, checkfirst=True)  # a database migrated by an older metacrm gets it here
        where = (table.c.login == login) & (table.c.key == key)
        if value is None:
            conn.execute(delete(table).where(where))
        elif conn.execute(update(table).where(where).values(value=value, updated_at=now)).rowcount == 0:
            conn.execute(insert(table).values(login=login, key=key, value=value, updated_at=now))
    return value


__all__ = ["preference", "preferences", "set_preference"]
