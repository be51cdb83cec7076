"""Users of a CRM: stored in the database (login, name, roles, team). The acting user is the
CRM object's ``user``; ``None`` is the system user, who may do anything."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from ..errors import FieldIssue, NotFound, ValidationError
from ..model.metamodel import Entity
from ..model.suggest import did_you_mean, listing
from ..storage.tables import Storage
from ..storage.types import now_utc
from ..types import UserInfo
from .protocol import Host


def _roles_text(model, roles) -> str:
    roles = [roles] if isinstance(roles, str) else list(roles or ())
    for role in roles:
        if role not in model.roles:
            hint = did_you_mean(role, model.roles)
            raise ValidationError(
                f"user: unknown role '{role}'" + (f" ({hint})" if hint else "") + f"; roles: {listing(model.roles)}"
            )
    return ",".join(dict.fromkeys(roles))


def _email(value: str | None) -> str | None:
    """A user's e-mail address, checked like an ``email`` field (None stays None)."""
    if value is None:
        return None
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValidationError(f"user: {value!r} is not an e-mail address ({exc})") from None


def _user_dict(row: Mapping[str, Any]) -> UserInfo:
    return {
        "login": row["login"],
        "name": row["name"],
        "roles": [r for r in (row["roles"] or "").split(",") if r],
        "team": row["team"],
        "email": row.get("email"),
    }


def check_owners_exist(
    conn: Connection, storage: Storage, entity: Entity, records: Sequence[Mapping[str, Any]], *, indexed: bool = False
) -> None:
    """Refuse an ``owner`` that is not a stored user, naming the field and the login: one
    query for the batch (per 500 distinct logins)."""
    wanted = sorted({v["owner"] for v in records if v.get("owner") is not None})
    if not wanted:
        return
    table = storage.user_table
    found: set = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(conn.execute(select(table.c.login).where(table.c.login.in_(chunk))).scalars())
    issues = [
        FieldIssue(
            entity.name,
            "owner",
            f"no user '{v['owner']}' (an owner must be a user: metacrm user add {v['owner']})",
            v["owner"],
            index if indexed else None,
        )
        for index, v in enumerate(records)
        if v.get("owner") is not None and v["owner"] not in found
    ]
    if issues:
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise ValidationError(issues[0].format() + more, issues)


class UsersMixin(Host):
    """User management for the CRM facade."""

    def add_user(
        self,
        login: str,
        *,
        roles: Iterable[str] | str = (),
        team: str | None = None,
        name: str | None = None,
        email: str | None = None,
    ) -> UserInfo:
        """Store a user with roles declared in the model (``email``: where notifications go)."""
        self._ready()
        login = (login or "").strip()
        if not login:
            raise ValidationError("user: a login is required")
        table = self.storage.user_table
        with self._writing() as conn:
            if conn.execute(select(table.c.login).where(table.c.login == login)).first():
                raise ValidationError(f"user '{login}' already exists")
            conn.execute(
                insert(table),
                {
                    "login": login,
                    "name": name,
                    "roles": _roles_text(self.model, roles),
                    "team": team,
                    "email": _email(email),
                    "created_at": now_utc(),
                },
            )
        return self.user_info(login)

    def set_user(
        self,
        login: str,
        *,
        roles: Iterable[str] | str | None = None,
        team: str | None = None,
        name: str | None = None,
        email: str | None = None,
    ) -> UserInfo:
        """Change a user's roles, team, name or e-mail (what is given; an empty e-mail removes it)."""
        self._ready()
        values = {}
        if roles is not None:
            values["roles"] = _roles_text(self.model, roles)
        if team is not None:
            values["team"] = team or None
        if name is not None:
            values["name"] = name
        if email is not None:
            values["email"] = _email(email) if email.strip() else None
        table = self.storage.user_table
        with self._writing() as conn:
            if (
                not conn.execute(update(table).where(table.c.login == login).values(**values)).rowcount
                if values
                else False
            ):
                self.user_info(login)  # raises NotFound
        return self.user_info(login)

    def user_info(self, login: str) -> UserInfo:
        table = self.storage.user_table
        with self._reading() as conn:
            row = conn.execute(select(table).where(table.c.login == login)).mappings().first()
        if row is None:
            raise NotFound(f"no user '{login}'", record_id=login)
        return _user_dict(row)

    def users(self) -> list[UserInfo]:
        self._ready()
        table = self.storage.user_table
        with self._reading() as conn:
            return [_user_dict(r) for r in conn.execute(select(table).order_by(table.c.login)).mappings()]

    def as_user(self, login: str | None) -> Self:
        """The same CRM acting as ``login`` (``None``: the system user). Shares the engine, and
        the transactions: inside ``crm.transaction()`` a view's operations, in the same thread
        or task, join it (elsewhere, each is its own)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.user = login
        clone._roles = None
        clone._team = None
        if login is not None:
            self._ready()
            info = self.user_info(login)
            clone._roles, clone._team = frozenset(info["roles"]), info["team"]
        clone._owns_engine = False
        return clone

    @property
    def roles(self) -> frozenset[str] | None:
        """The acting user's roles; None for the system user (who may do anything)."""
        return self._roles
