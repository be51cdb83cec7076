"""Every database name metacrm derives from a model, decided in one place.

Table = entity name; column = field name; a single link is the column ``<link>_id`` (a
polymorphic one adds ``<link>_entity``); a many-link is the join table ``<entity>__<link>``
with the columns ``source_id`` and ``target_id``. System tables start with ``metacrm_``.
Entity, field and link names are at most 63 characters; every name derived from them (a link's
column, a join table, constraint and index names, the search index) is shortened with a hash
past 63 bytes (PostgreSQL's limit) so it stays stable across runs. Any SQL word may be a name:
statements are built with SQLAlchemy, which quotes what needs quoting, and the few written by
hand quote every identifier.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

SYSTEM_PREFIX = "metacrm_"
MODEL_TABLE = "metacrm_model"
HISTORY_TABLE = "metacrm_history"
LOCK_TABLE = "metacrm_lock"
USER_TABLE = "metacrm_user"
JOURNAL_TABLE = "metacrm_journal"
OUTBOX_TABLE = "metacrm_outbox"
FIRED_TABLE = "metacrm_fired"
TOKEN_TABLE = "metacrm_token"
PASSWORD_TABLE = "metacrm_password"
SESSION_TABLE = "metacrm_session"
FORM_STATE_TABLE = "metacrm_form_state"
PREFERENCE_TABLE = "metacrm_preference"
SEQUENCE_TABLE = "metacrm_sequence"
FILES_TABLE = "metacrm_files"
MAX_NAME = 63


def table_name(entity: str) -> str:
    return entity


@lru_cache(maxsize=4096)  # called per record and link on every write
def link_column(link: str) -> str:
    return short(f"{link}_id")


@lru_cache(maxsize=4096)
def link_entity_column(link: str) -> str:
    """The column naming the target entity of a polymorphic link."""
    return short(f"{link}_entity")


def join_table_name(entity: str, link: str) -> str:
    return short(f"{entity}__{link}")


JOIN_SOURCE = "source_id"
JOIN_TARGET = "target_id"
JOIN_TARGET_ENTITY = "target_entity"  # a polymorphic many-link's join table: the target's entity


def short(name: str) -> str:
    """``name`` itself, or a stable shortened form when it is longer than 63 bytes
    (PostgreSQL's limit; names are ASCII): its first 54 characters, ``_`` and 8 hex digits of
    its SHA-1, so two long names sharing a beginning stay distinct."""
    if len(name.encode()) <= MAX_NAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name.encode()[: MAX_NAME - 9].decode(errors='ignore')}_{digest}"


def index_name(table: str, columns: list[str] | tuple[str, ...]) -> str:
    return short(f"ix_{table}_{'_'.join(columns)}")


def unique_name(table: str, columns: list[str] | tuple[str, ...]) -> str:
    return short(f"uq_{table}_{'_'.join(columns)}")


def check_name(table: str, column: str) -> str:
    return short(f"ck_{table}_{column}")


def fk_name(table: str, column: str) -> str:
    return short(f"fk_{table}_{column}")


def pk_name(table: str) -> str:
    return short(f"pk_{table}")
