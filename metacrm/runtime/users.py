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


def _given_logins(entity: Entity, values: Mapping[str, Any], links: tuple | None = None) -> list[tuple[str, str]]:
    """(member, login) for the owner and every ``to: user`` link a record's values name
    (``links``: the entity's ``user_links``, when the caller has them for a whole batch)."""
    pairs = [("owner", values["owner"])] if values.get("owner") is not None else []
    for f in entity.user_links if links is None else links:
        value = values.get(f.name)
        if value:
            pairs += [(f.name, login) for login in ([value] if isinstance(value, str) else value)]
    return pairs


def check_users_exist(
    conn: Connection,
    storage: Storage,
    entity: Entity,
    records: Sequence[Mapping[str, Any]],
    *,
    indexed: bool = False,
    current: Mapping[str, Any] | None = None,
) -> None:
    """Refuse an ``owner`` or a ``to: user`` link naming no stored user, and a link newly made
    to a disabled user (one already on the record, ``current``, stays), naming the field and the
    login: one query for the batch (per 500 distinct logins)."""
    links = entity.user_links  # worked out once for the batch, not per record
    given = [_given_logins(entity, values, links) for values in records]
    wanted = sorted({login for pairs in given for _, login in pairs})
    if not wanted:
        return
    table = storage.user_table
    found: dict[str, bool] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        query = select(table.c.login, table.c.disabled_at.is_not(None)).where(table.c.login.in_(chunk))
        found.update((login, bool(off)) for login, off in conn.execute(query))
    issues = []
    for index, pairs in enumerate(given):
        for member, login in pairs:
            if login not in found:
                what = "an owner" if member == "owner" else "a link to users"
                why = f"no user '{login}' ({what} must be a user: metacrm user add {login})"
            elif found[login] and member != "owner" and not _holds(current, member, login):
                why = f"user '{login}' is disabled (metacrm user enable {login}); a disabled user stays on the records they are on, but is linked to no other"
            else:
                continue
            issues.append(FieldIssue(entity.name, member, why, login, index if indexed else None))
    if issues:
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise ValidationError(issues[0].format() + more, issues)


def _holds(current: Mapping[str, Any] | None, member: str, login: str) -> bool:
    value = (current or {}).get(member)
    return value == login or isinstance(value, list) and login in value


def check_owners_exist(
    conn: Connection, storage: Storage, entity: Entity, records: Sequence[Mapping[str, Any]], *, indexed: bool = False
) -> None:
    """The owners and user links of new records name stored users (see :func:`check_users_exist`)."""
    check_users_exist(conn, storage, entity, records, indexed=indexed)


def user_names(conn: Connection, storage: Storage, logins) -> dict[str, str]:
    """login -> the user's name (their login when they have none), for the stored ones among
    ``logins``: one query."""
    logins = sorted(v for v in logins if isinstance(v, str))
    if not logins:
        return {}
    table = storage.user_table
    query = select(table.c.login, table.c.name).where(table.c.login.in_(logins))
    return {login: name or login for login, name in conn.execute(query)}


def user_refs(conn: Connection, storage: Storage, entity: Entity, record: Mapping[str, Any]) -> dict:
    """Each ``to: user`` link of a record as references (``{"entity": "user", "id": login,
    "title": name or login, "hidden": False}``): one query for all the logins."""
    names = user_names(conn, storage, {login for _, login in _given_logins(entity, {**record, "owner": None})})

    def ref(login: str) -> dict:
        return {"entity": "user", "id": login, "title": names.get(login) or login, "hidden": False}

    out: dict = {}
    for f in entity.user_links:
        value = record.get(f.name)
        out[f.name] = [ref(v) for v in value or ()] if f.type == "users" else None if value is None else ref(value)
    return out


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

    def _linked_records(self, login: str) -> dict[tuple[str, str], list[int]]:
        """(entity, link) -> the ids of the records whose ``to: user`` link names ``login``."""
        from ..storage.valueindex import holds_value

        found: dict[tuple[str, str], list[int]] = {}
        with self._reading() as conn:
            for ent in self.model.entities.values():
                t = self.storage.table(ent.name) if ent.user_links else None
                for f in ent.user_links:
                    column = t.c[f.name]
                    clause = column == login if f.type == "user" else holds_value(t, ent.name, f, login)
                    ids = list(conn.execute(select(t.c.id).where(clause).order_by(t.c.id)).scalars())
                    if ids:
                        found[(ent.name, f.name)] = ids
        return found

    def remove_user(self, login: str, *, reassign_to: str | None = None) -> dict[str, int]:
        """Remove a user with their password, sessions, tokens and settings. A user who owns
        records, or whom a ``to: user`` link with ``on_delete: restrict`` (the default) names, is
        refused (ConflictError naming how many of each) unless ``reassign_to`` names the user
        who takes them over; ``set_null`` links let the user go. Each record is updated
        (journaled, automations run) in the same transaction. Returns the reassigned counts
        (``entity`` for owned records, ``entity.link`` for links)."""
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
            linked = self._linked_records(login)
            held = {f"{e}.{link}": len(ids) for (e, link), ids in linked.items() if self._restricts(e, link)}
            if (owned or held) and reassign_to is None:
                parts = []
                if owned:
                    total = sum(owned.values())
                    what = ", ".join(f"{name} {n}" for name, n in owned.items())
                    parts.append(f"owns {total} record{'s' if total != 1 else ''} ({what})")
                if held:
                    total = sum(held.values())
                    what = ", ".join(f"{name} {n}" for name, n in held.items())
                    parts.append(f"is linked to {total} record{'s' if total != 1 else ''} ({what})")
                raise ConflictError(
                    f"user '{login}' {' and '.join(parts)}: give --reassign-to "
                    f"LOGIN to hand them over, or disable the user instead (metacrm user disable {login})"
                )
            self._unlink_user(login, linked, reassign_to)
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
        return {**owned, **{f"{e}.{link}": len(ids) for (e, link), ids in linked.items()}}

    def _restricts(self, entity: str, link: str) -> bool:
        return self.model.entities[entity].fields[link].on_delete == "restrict"

    def _unlink_user(self, login: str, linked: dict[tuple[str, str], list[int]], reassign_to: str | None) -> None:
        """Take ``login`` off the records ``linked`` names: a ``restrict`` link hands them to
        ``reassign_to``, a ``set_null`` link drops them (each an update: journaled, checked)."""
        for (name, link), ids in linked.items():
            f = self.model.entities[name].fields[link]
            other = reassign_to if f.on_delete == "restrict" else None
            for record_id in ids:
                if f.type == "user":
                    self.update(name, record_id, {link: other})
                    continue
                current = self.get(name, record_id)[link]
                chosen = [other if v == login else v for v in current if v != login or other is not None]
                self.update(name, record_id, {link: list(dict.fromkeys(chosen)) or None})

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
        clone._owns_read_engine = False
        return clone

    @property
    def roles(self) -> frozenset[str] | None:
        """The acting user's roles; None for the system user (who may do anything)."""
        return self._roles
