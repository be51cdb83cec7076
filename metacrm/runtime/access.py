"""Row-level access: what a user's roles allow, compiled into SQL for reads and checked on
every write.

A role grants per entity (or ``"*"``) a scope per action: ``all``, ``team`` (the record's
owner is in the user's team), ``assigned`` (the record's owner is the user, or its ``to:
user`` links name the user: an account manager, an assignee), ``own`` (the record's owner is
the user) or ``none``; each scope takes in the records of the narrower ones (``team`` also
the records the user is assigned to), and with several roles the widest scope wins.
``{assigned: [links]}`` counts only the named ``to: user`` links (plain ``assigned``: all of
the entity's; several roles granting it: the links of each). The system user (no login) may
do anything. A rule that cannot be evaluated denies: ``own``/``team`` on an entity without
``owner: true``, or ``team`` for a user without a team, grant nothing beyond the user's own
(or assigned) records (and nothing at all where records have neither an owner nor links to
users).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Boolean, and_, any_, false, func, or_, select, type_coerce

from ..errors import FieldIssue, PermissionDenied, ValidationError
from ..expr.functions import dialect_pick
from ..model.metamodel import Entity, Model

RANK = {"none": 0, "own": 1, "assigned": 2, "team": 3, "all": 4}


@dataclass(frozen=True)
class Actor:
    """Who acts: a login with roles and a team, or the system user (login None)."""

    login: str | None = None
    roles: frozenset[str] | None = None
    team: str | None = None

    @property
    def system(self) -> bool:
        return self.login is None


SYSTEM = Actor()


def scope(model: Model, actor: Actor, entity: str, action: str) -> str:
    """The widest scope the actor's roles grant for an action on an entity."""
    if actor.system:
        return "all"
    best = "none"
    for name in actor.roles or ():
        role = model.roles.get(name)
        if role is None:
            continue
        perms = role.permissions.get(entity) or role.permissions.get("*")
        granted = perms.get(action, "none") if perms else "none"
        if RANK[granted] > RANK[best]:
            best = granted
    return best


def assigned_links(model: Model, actor: Actor, ent: Entity, action: str) -> tuple:
    """The ``to: user`` links (fields) through which the actor's ``assigned`` (or ``team``)
    scope for an action reaches records of ``ent``: the links each such role names, or all."""
    every = ent.user_links
    if not every or actor.system:
        return ()
    names: set[str] = set()
    for name in actor.roles or ():
        role = model.roles.get(name)
        if role is None:
            continue
        key = ent.name if ent.name in role.permissions else "*"
        perms = role.permissions.get(key)
        if not perms or RANK[perms.get(action, "none")] < RANK["assigned"]:
            continue
        named = (role.assigned.get(key) or {}).get(action)
        names.update(f.name for f in every) if named is None else names.update(named)
    return tuple(f for f in every if f.name in names)


def _assigned_sql(table, ent: Entity, links: tuple, login: str) -> list:
    """The conditions "``login`` is the owner or in one of ``links``" on ``table`` (a list of
    users through its value index: storage/valueindex.py)."""
    from ..storage.valueindex import holds_value

    terms = [table.c.owner == login] if ent.owner else []
    for f in links:
        terms.append(table.c[f.name] == login if f.type == "user" else holds_value(table, ent.name, f, login))
    return terms


def is_assigned(ent: Entity, links: tuple, login: str | None, record) -> bool:
    """Python's :func:`_assigned_sql`: ``login`` is the record's owner or in one of ``links``."""
    if login is None or record is None:
        return False
    if ent.owner and record.get("owner") == login:
        return True
    for f in links:
        value = record.get(f.name)
        if value == login or isinstance(value, list) and login in value:
            return True
    return False


def require(model: Model, actor: Actor, entity: str, action: str) -> None:
    """Refuse at once an action the actor's roles grant on no record of the entity (scope
    ``none``): checked before any value is validated or any row read, so the answer names the
    missing right rather than a bad value or an empty result."""
    if actor.system:
        return
    if scope(model, actor, entity, action) == "none":
        raise PermissionDenied(
            f"user '{actor.login}' may not {action} {entity} records (scope for {action}: none)",
            action=action,
            user=actor.login,
            entity=entity,
        )


ARCHIVED = ("exclude", "only", "include")  # what a read does with archived records (docs/archive.md)


def archived_mode(ent: Entity, archived: str | None) -> str:
    """The archive mode of a read, checked: ``exclude`` (the default: live records only),
    ``only`` (archived records only) or ``include`` (both). Asking for archived records of an
    entity without ``archive: true`` is refused (it has none)."""
    mode = "exclude" if archived is None else archived
    if mode not in ARCHIVED:
        raise ValidationError(
            f"{ent.name}: archived must be one of {', '.join(ARCHIVED)}, not {archived!r}",
            [FieldIssue(ent.name, "archived", f"must be one of {', '.join(ARCHIVED)}", archived)],
        )
    if mode != "exclude" and not ent.archive:
        raise ValidationError(
            f"{ent.name} has no archive (the entity does not declare archive: true): archived={mode} has nothing to show",
            [FieldIssue(ent.name, "archived", "the entity does not declare archive: true", archived)],
        )
    return mode


def archive_clause(ent: Entity, table, archived: str = "exclude"):
    """The WHERE condition of an archive mode on ``table`` (None: every record)."""
    if not ent.archive or archived == "include":
        return None
    column = table.c.archived_at
    return column.is_(None) if archived == "exclude" else column.is_not(None)


def row_clause(storage, ent: Entity, actor: Actor, action: str = "read", *, table=None, archived: str = "exclude"):
    """A WHERE condition selecting the records the actor may act on (None: every record);
    ``table``: an alias of the entity's table to write it on (default: the table itself).
    Archived records (an entity with ``archive: true``) are left out unless ``archived`` is
    ``only`` or ``include``."""
    table = storage.table(ent.name) if table is None else table
    allowed = _scope_clause(storage, ent, actor, action, table)
    hidden = archive_clause(ent, table, archived)
    if hidden is None:
        return allowed
    return hidden if allowed is None else and_(allowed, hidden)


def _scope_clause(storage, ent: Entity, actor: Actor, action: str, table):
    granted = scope(storage.model, actor, ent.name, action)
    if granted == "all":
        return None
    links = assigned_links(storage.model, actor, ent, action) if granted in ("assigned", "team") else ()
    if granted == "none" or not ent.owner and not links:
        return false()
    terms = _assigned_sql(table, ent, links, actor.login)
    if granted == "team" and actor.team and ent.owner:
        terms[0] = in_team(table.c.owner, storage.user_table, actor.team)
    return terms[0] if len(terms) == 1 else or_(*terms)


def readable(model: Model, actor: Actor, ent: Entity, owner, members: set[str], record=None) -> bool:
    """Whether ``actor`` may read a record of ``ent`` owned by ``owner``: the rule of
    :func:`row_clause` in Python (``members``: the logins of the actor's team, the actor
    included, as :func:`team_members` gives them; ``record``: its values, for the ``to: user``
    links of the ``assigned`` scope)."""
    return _allowed(model, actor, ent, "read", owner, members, record)


def _allowed(model: Model, actor: Actor, ent: Entity, action: str, owner, members, record) -> bool:
    granted = scope(model, actor, ent.name, action)
    if granted == "all":
        return True
    if granted == "none":
        return False
    if granted in ("assigned", "team"):
        links = assigned_links(model, actor, ent, action)
        if is_assigned(ent, links, actor.login, record):
            return True
    if not ent.owner or owner is None:
        return False
    if granted == "team" and actor.team:
        return owner in (members() if callable(members) else members)
    return owner == actor.login


def in_team(owner, users, team: str):
    """``owner`` is a user of ``team``. On PostgreSQL the team's logins are read once per query
    into an array (an InitPlan) the owner is filtered by: as ``IN (SELECT ...)`` the planner
    makes it a join with the users table per group of rows, 2-4x slower on a page of a large
    table (bench/bench_access.py). SQLite reads the subquery once either way."""
    logins = select(users.c.login).where(users.c.team == team)
    return type_coerce(dialect_pick(owner.in_(logins), owner == any_(func.array(logins.scalar_subquery()))), Boolean())


def path_access(storage, actor: Actor):
    """What a filter may see through links, for ``compile_sql(..., access=...)``: a function
    ``(entity, table) -> the actor's read condition on that table (None: every record)``, so a
    path through a link reaches only records the actor may read, and never an archived one;
    None for the system user on a model without ``archive: true`` (no extra SQL)."""
    model = storage.model
    if actor.system and not any(e.archive for e in model.entities.values()):
        return None

    def readable(entity: str, table):
        return row_clause(storage, model.entities[entity], actor, table=table)

    return readable


def team_members(conn, storage, actor: Actor) -> set[str]:
    if not actor.team:
        return {actor.login} if actor.login else set()
    users = storage.user_table
    return set(conn.execute(select(users.c.login).where(users.c.team == actor.team)).scalars()) | {actor.login}


def check_row(conn, storage, ent: Entity, actor: Actor, action: str, row) -> None:
    """Refuse (PermissionDenied) when the actor may not do ``action`` on this record."""
    granted = scope(storage.model, actor, ent.name, action)
    if granted == "all":
        return
    owner = row.get("owner") if ent.owner else None
    if not _allowed(storage.model, actor, ent, action, owner, lambda: team_members(conn, storage, actor), row):
        raise PermissionDenied(
            f"user '{actor.login}' may not {action} {ent.name} {row['id']} (scope for {action}: {granted})",
            action=action,
            user=actor.login,
            entity=ent.name,
            record_id=row["id"],
        )


def check_create(
    conn, storage, ent: Entity, actor: Actor, owners: set, *, action: str = "create", records=None
) -> None:
    """Refuse creating records (owned by ``owners``) outside the actor's create scope; with
    ``assigned`` on an entity without owners, each of ``records`` must name the actor in a
    ``to: user`` link."""
    granted = scope(storage.model, actor, ent.name, action)
    if granted == "all":
        return
    if not ent.owner and granted in ("assigned", "team"):
        links = assigned_links(storage.model, actor, ent, action)
        if links and all(is_assigned(ent, links, actor.login, r) for r in records or ()):
            return
        if links:
            names = ", ".join(f.name for f in links)
            raise PermissionDenied(
                f"user '{actor.login}' may not {action} {ent.name} records that do not name them in {names} "
                f"(scope: {granted})",
                action=action,
                user=actor.login,
                entity=ent.name,
            )
    if granted == "none" or not ent.owner:
        raise PermissionDenied(
            f"user '{actor.login}' may not {action} {ent.name} records (scope: {granted})",
            action=action,
            user=actor.login,
            entity=ent.name,
        )
    allowed = team_members(conn, storage, actor) if granted == "team" else {actor.login}
    foreign = sorted(o for o in owners if o not in allowed)
    if foreign:
        raise PermissionDenied(
            f"user '{actor.login}' may not {action} {ent.name} records owned by {', '.join(map(str, foreign))} "
            f"(scope: {granted})",
            action=action,
            user=actor.login,
            entity=ent.name,
        )
