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


def _info_columns(table) -> list:
    """The columns of a UserInfo (not ``disabled_at``: a database whose user table predates it
    still lists its users)."""
    return [table.c.login, table.c.name, table.c.roles, table.c.team, table.c.email]


def _has_table(conn: Connection, table) -> bool:
    """Whether the database has this system table (one added by a later metacrm may be missing
    until `metacrm migrate`)."""
    from sqlalchemy import inspect

    return inspect(conn).has_table(table.name)


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
            row = conn.execute(select(*_info_columns(table)).where(table.c.login == login)).mappings().first()
        if row is None:
            raise NotFound(f"no user '{login}'", record_id=login)
        return _user_dict(row)

    def users(self) -> list[UserInfo]:
        self._ready()
        table = self.storage.user_table
        with self._reading() as conn:
            rows = conn.execute(select(*_info_columns(table)).order_by(table.c.login)).mappings()
            return [_user_dict(r) for r in rows]

    def disabled_users(self) -> set[str]:
        """The logins disabled by :meth:`disable_user` (none on a database whose user table
        predates the flag: `metacrm migrate` adds it)."""
        from sqlalchemy.exc import DBAPIError

        from .engine import reading

        table = self.storage.user_table
        try:
            with reading(self.engine) as conn:
                return set(conn.execute(select(table.c.login).where(table.c.disabled_at.is_not(None))).scalars())
        except DBAPIError:
            return set()

    def disable_user(self, login: str) -> UserInfo:
        """Disable a user: no sign-in to the browser app (open sessions end), no API token,
        no acting as them; their records, tokens and password stay (:meth:`enable_user`
        brings them back). Only the system user may."""
        return self._set_disabled(login, now_utc())

    def enable_user(self, login: str) -> UserInfo:
        """Undo :meth:`disable_user`."""
        return self._set_disabled(login, None)

    def _set_disabled(self, login: str, at) -> UserInfo:
        from sqlalchemy import delete

        self._system_only("disable or enable users")
        self._ready()
        info = self.user_info(login)  # NotFound names the login
        table = self.storage.user_table
        with self._writing() as conn:
            conn.execute(update(table).where(table.c.login == login).values(disabled_at=at))
            if at is not None:
                sessions = self.storage.session_table
                if _has_table(conn, sessions):
                    conn.execute(delete(sessions).where(sessions.c.login == login))
        return info

    def owned_records(self, login: str) -> dict[str, int]:
        """entity -> how many of its records ``login`` owns (entities with owners; none left out)."""
        from sqlalchemy import func

        counts: dict[str, int] = {}
        with self._reading() as conn:
            for ent in self.model.entities.values():
                if ent.owner:
                    t = self.storage.table(ent.name)
                    n = conn.execute(select(func.count()).select_from(t).where(t.c.owner == login)).scalar_one()
                    if n:
                        counts[ent.name] = n
        return counts

    def remove_user(self, login: str, *, reassign_to: str | None = None) -> dict[str, int]:
        """Remove a user with their password, sessions, tokens and settings. A user who owns
        records is refused (ConflictError naming how many of each entity) unless
        ``reassign_to`` names the user who takes them over: each record is updated (journaled,
        automations run) in the same transaction. Returns the reassigned counts."""
        from sqlalchemy import delete

        from ..errors import ConflictError

        self._system_only("remove users")
        self._ready()
        self.user_info(login)  # NotFound names the login
        if reassign_to is not None:
            if reassign_to == login:
                raise ValidationError(f"user: --reassign-to must name another user than '{login}'")
            self.user_info(reassign_to)
        with self.transaction():
            owned = self.owned_records(login)
            if owned and reassign_to is None:
                total = sum(owned.values())
                what = ", ".join(f"{name} {n}" for name, n in owned.items())
                raise ConflictError(
                    f"user '{login}' owns {total} record{'s' if total != 1 else ''} ({what}): give --reassign-to "
                    f"LOGIN to hand them over, or disable the user instead (metacrm user disable {login})"
                )
            for name in owned:
                t = self.storage.table(name)
                with self._reading() as conn:
                    ids = list(conn.execute(select(t.c.id).where(t.c.owner == login).order_by(t.c.id)).scalars())
                for record_id in ids:
                    self.update(name, record_id, {"owner": reassign_to})
            with self._writing() as conn:
                for table in (
                    self.storage.token_table,
                    self.storage.session_table,
                    self.storage.password_table,
                    self.storage.preference_table,
                ):
                    if _has_table(conn, table):
                        conn.execute(delete(table).where(table.c.login == login))
                users = self.storage.user_table
                conn.execute(delete(users).where(users.c.login == login))
        return owned

    def _enabled(self, login: str) -> None:
        """Refuse to act as a disabled user, as if there were none (NotFound: the browser app
        and the API then answer as for a removed user)."""
        if login in self.disabled_users():
            raise NotFound(f"user '{login}' is disabled (metacrm user enable {login})", record_id=login)

    def _system_only(self, what: str) -> None:
        if self.user is not None:
            from ..errors import PermissionDenied

            raise PermissionDenied(f"user '{self.user}' may not {what}: only the system user may")

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
            self._enabled(login)
            clone._roles, clone._team = frozenset(info["roles"]), info["team"]
        clone._owns_engine = False
        return clone

    @property
    def roles(self) -> frozenset[str] | None:
        """The acting user's roles; None for the system user (who may do anything)."""
        return self._roles
