"""Tenants: several CRMs in one database server, none able to see another's data.

PostgreSQL: a tenant is a schema named after it, holding its own tables, recorded model
version, users, tokens, journal, outbox, sequences and migration lock (the lock's key is derived
from ``current_schema()``, metacrm.migrate.lock). Every CRM of every tenant may share one engine
and so one connection pool: a CRM for tenant T works on ``engine.execution_options(
metacrm_tenant=T)``, and the listener :func:`install` puts on the engine sets ``search_path`` to
T's schema alone (not ``public``: a table missing from T must never resolve to another CRM's) on
every checkout whose connection does not already have it, in a transaction of its own that is
committed at once, so a later rollback cannot bring another tenant's path back. A checkout
without a tenant resets the path to the session's default. Which path a pooled connection holds
is kept in its record's ``info``; a connection the pool replaces starts again from the default.

SQLite: a tenant is a database file beside the one the URL names (``crm.db`` -> ``crm.acme.db``),
with its own engine.

The tenants of a database are listed in ``metacrm_tenants`` in the database the URL names (the
``public`` schema, the named SQLite file): ``metacrm tenant create|list|drop`` keep it, and a CRM
for a tenant that is not listed is refused. docs/scaling.md.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, event, inspect, select, text
from sqlalchemy.engine import Connection, Engine, make_url

from ..errors import ConflictError, MetaCRMError, NotFound, SetupError
from .engine import in_memory, make_engine, normalise_url, reading, shown_url, writing

TENANT = "metacrm_tenant"  # the execution option naming a CRM's tenant
_PATH = "metacrm_search_path"  # in a pooled connection's info: the tenant its search_path names (absent: default)
_UNKNOWN = object()  # a SET that did not complete: set the path again on the next checkout
REGISTRY = "metacrm_tenants"
NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")
RESERVED = ("public", "information_schema", "metacrm")
ENV = "METACRM_TENANT"
log = logging.getLogger("metacrm.tenants")

_metadata = MetaData()
registry = Table(
    REGISTRY,
    _metadata,
    Column("name", String(48), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
_INSTALLED = "metacrm_tenants_installed"


def check_name(name: object) -> str:
    """``name`` if it can name a tenant (a schema and a file name on every system), else SetupError."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in RESERVED or name.startswith("pg_"):
        raise SetupError(
            f"not a tenant name: {name!r} (lower-case letters, digits and _, starting with a letter, "
            f"at most 48; not {', '.join(RESERVED)} nor pg_...)"
        )
    return name


def install(engine: Engine) -> None:
    """Set up a PostgreSQL engine so that a connection checked out through
    ``engine.execution_options(metacrm_tenant=T)`` works in T's schema and any other one in the
    default path. Installing twice does nothing; SQLite engines need nothing."""
    base = getattr(engine, "_proxied", engine)
    if base.dialect.name != "postgresql" or base.__dict__.get(_INSTALLED):
        return
    base.__dict__[_INSTALLED] = True
    event.listen(base, "engine_connect", _set_path)


def _set_path(conn: Connection) -> None:
    apply_path(conn.connection._connection_record, conn.get_execution_options().get(TENANT))


def apply_path(record, tenant: str | None) -> None:
    """Give the pooled connection of ``record`` the search_path of ``tenant`` (None: the
    default) unless it has it already; committed at once, outside any transaction of the caller."""
    if record.info.get(_PATH) == tenant:
        return
    driver = record.driver_connection
    record.info[_PATH] = _UNKNOWN  # until committed: a failure below makes the next checkout set it again
    with driver.cursor() as cursor:
        cursor.execute("RESET search_path" if tenant is None else f'SET search_path TO "{tenant}"')
    driver.commit()
    if tenant is None:
        del record.info[_PATH]
    else:
        record.info[_PATH] = tenant


def tenant_url(url: str, name: str) -> str:
    """The SQLite URL of tenant ``name`` beside the database ``url`` names: ``crm.db`` ->
    ``crm.acme.db``."""
    parsed = normalise_url(url)
    if in_memory(parsed):
        raise SetupError(f"tenants need a database file or PostgreSQL, not {shown_url(parsed)}")
    path = Path(parsed.database)
    return parsed.set(database=str(path.with_name(f"{path.stem}.{name}{path.suffix}"))).render_as_string(
        hide_password=False
    )


def for_tenant(engine: Engine, name: str | None) -> Engine:
    """The engine a CRM of tenant ``name`` works on: PostgreSQL, ``engine`` with the tenant as an
    execution option (the same pool); SQLite: the tenant's own file (a new engine)."""
    if name is None:
        return engine
    check_name(name)
    if engine.dialect.name == "postgresql":
        install(engine)
        return engine.execution_options(**{TENANT: name})
    own = make_engine(tenant_url(engine.url.render_as_string(hide_password=False), name))
    return own.execution_options(**{TENANT: name})  # the name kept for tenant_of (its file store...)


def tenant_of(engine: Engine) -> str | None:
    """The tenant a CRM's engine works for (None: the database itself)."""
    return engine.get_execution_options().get(TENANT)


def root(engine: Engine) -> Engine:
    """The engine of the database that lists the tenants (the option engine's base on PostgreSQL)."""
    return getattr(engine, "_proxied", engine)


# -- the registry -----------------------------------------------------------------------------


def names(engine: Engine) -> list[str]:
    """The tenants of the database ``engine`` opens (its ``metacrm_tenants``), in name order."""
    with reading(root(engine)) as conn:
        if not inspect(conn).has_table(REGISTRY):
            return []
        return list(conn.execute(select(registry.c.name).order_by(registry.c.name)).scalars())


def exists(engine: Engine, name: str) -> bool:
    with reading(root(engine)) as conn:
        if not inspect(conn).has_table(REGISTRY):
            return False
        return conn.execute(select(registry.c.name).where(registry.c.name == name)).first() is not None


def require(engine: Engine, name: str) -> None:
    """NotFound naming the tenant and what exists, unless ``name`` is a tenant of the database."""
    if not exists(engine, name):
        known = names(engine)
        raise NotFound(
            f"no tenant {name!r} in {shown_url(engine.url)} "
            f"({'tenants: ' + ', '.join(known) if known else 'it has no tenants'}; `metacrm tenant create {name}` makes it)"
        )


def create(engine: Engine, name: str) -> None:
    """Register tenant ``name`` and make its (empty) schema or file; ConflictError if it exists.
    The caller migrates it (metacrm.runtime.crm.CRM.migrate on :func:`for_tenant`)."""
    check_name(name)
    base = root(engine)
    with writing(base) as conn:
        registry.create(conn, checkfirst=True)
        if conn.execute(select(registry.c.name).where(registry.c.name == name)).first() is not None:
            raise ConflictError(f"tenant {name!r} already exists in {shown_url(base.url)}")
        if base.dialect.name == "postgresql":
            if conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :n"), {"n": name}).first():
                raise ConflictError(
                    f"a schema named {name!r} already exists in {shown_url(base.url)} and is not a metacrm "
                    "tenant: choose another name"
                )
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        else:
            path = Path(make_url(tenant_url(base.url.render_as_string(hide_password=False), name)).database)
            if path.exists():
                raise ConflictError(f"{path} already exists and is not a metacrm tenant: choose another name")
        conn.execute(registry.insert().values(name=name, created_at=datetime.now(UTC)))


def has_data(engine: Engine) -> int:
    """How many rows the tenant's tables hold, leaving out metacrm's bookkeeping (the recorded
    model and its history, the lock): records, links, users, tokens, the journal all count."""
    bookkeeping = {"metacrm_model", "metacrm_lock", "metacrm_sequence"}
    total = 0
    with reading(engine) as conn:
        for table in inspect(conn).get_table_names():
            if table in bookkeeping or table.endswith("_fts") or "_fts_" in table:
                continue
            quoted = conn.dialect.identifier_preparer.quote(table)
            total += conn.execute(text(f"SELECT count(*) FROM {quoted}")).scalar_one()
    return total


def drop(engine: Engine, name: str, *, force: bool = False) -> int:
    """Remove tenant ``name``: its schema (PostgreSQL) or file (SQLite) and its registry row.
    Refused (ConflictError naming the count) while it holds data, unless ``force``. Returns the
    rows removed."""
    check_name(name)
    base = root(engine)
    require(base, name)
    tenant = for_tenant(base, name)
    rows = has_data(tenant)
    if rows and not force:
        raise ConflictError(
            f"tenant {name!r} holds {rows} row{'s' if rows != 1 else ''} (records, links, users, journal): "
            "nothing dropped; add --force to drop it with its data"
        )
    if base.dialect.name == "postgresql":
        with writing(base) as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
            conn.execute(registry.delete().where(registry.c.name == name))
        return rows
    tenant.dispose()
    path = Path(make_url(tenant_url(base.url.render_as_string(hide_password=False), name)).database)
    with writing(base) as conn:
        conn.execute(registry.delete().where(registry.c.name == name))
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(f"{path}.files", ignore_errors=True)  # its default file store (docs/files.md)
    return rows


# -- tenants.yaml: which model each tenant holds --------------------------------------------------
TENANTS_FILE_ENV = "METACRM_TENANTS_FILE"
TENANTS_FILE = "tenants.yaml"


class TenantMap:
    """A ``tenants.yaml``: the model file of each tenant, so that one server hosts several
    businesses::

        default: trade.yaml          # tenants not listed (optional)
        tenants:
          acme: trade.yaml
          seaways: logistics.yaml

    Paths are relative to the file. :meth:`model_for` answers the path for a tenant, or the
    fallback (the command's ``--model``) when neither the tenant nor ``default`` is listed."""

    def __init__(self, file: str | None = None, models: dict[str, str] | None = None, default: str | None = None):
        self.file = file
        self.models = dict(models or {})
        self.default = default

    def model_for(self, name: str, fallback: str | None = None) -> str | None:
        return self.models.get(name, self.default or fallback)

    @classmethod
    def load(cls, path: str | Path) -> TenantMap:
        """Read ``path``; ModelError with every problem as FILE:LINE:COL when it is not one."""
        from ..errors import ModelError, Problem
        from ..model.yaml_source import read_source

        source = read_source(path)
        problems = list(source.problems)
        data = source.data if not problems else None

        def problem(message: str, where: tuple = ()) -> None:
            line, col = source.keys.get(where) or source.values.get(where) or (1, 1)
            problems.append(Problem("tenants.invalid", message, str(path), line, col))

        base = Path(path).resolve().parent
        models: dict[str, str] = {}
        default = None
        if not problems:
            if not isinstance(data, dict):
                problem("a tenants file is a mapping with `tenants:` (tenant: model file) and an optional `default:`")
            else:
                for key in data:
                    if key not in ("tenants", "default"):
                        problem(f"unknown key {key!r}: a tenants file has `tenants:` and `default:`", (key,))
                if "default" in data:
                    if isinstance(data["default"], str) and data["default"].strip():
                        default = str((base / data["default"]).resolve())
                    else:
                        problem("default: give the path of a model file", ("default",))
                listed = data.get("tenants")
                if listed is None and "tenants" not in data:
                    problem("no `tenants:` mapping (tenant: model file)")
                elif not isinstance(listed, dict):
                    problem("tenants: a mapping of tenant name to model file", ("tenants",))
                else:
                    for name, model in listed.items():
                        where = ("tenants", name)
                        if not isinstance(name, str) or not NAME.fullmatch(name) or name in RESERVED:
                            problem(f"tenants: {name!r} is not a tenant name (lower-case letters, digits and _)", where)
                        elif not isinstance(model, str) or not model.strip():
                            problem(f"tenants.{name}: give the path of a model file", where)
                        else:
                            models[name] = str((base / model).resolve())
        if problems:
            raise ModelError(problems)
        return cls(str(path), models, default)

    @classmethod
    def find(cls, path: str | None = None) -> TenantMap:
        """The tenants file given (``path``, else ``$METACRM_TENANTS_FILE``), else ``./tenants.yaml``
        when there is one, else an empty map (every tenant holds the command's model)."""
        import os

        given = path or os.environ.get(TENANTS_FILE_ENV)
        if given:
            return cls.load(given)
        if Path(TENANTS_FILE).is_file():
            return cls.load(TENANTS_FILE)
        return cls()


# -- every tenant in turn: migrate --all-tenants, tick / deliver --all-tenants -------------------


@dataclass
class TenantResult:
    """What one tenant's turn of :func:`run_all` (or :func:`migrate_all`) came to.

    ``status``: ``done`` (run_all), or for a migration ``applied``, ``up to date`` or
    ``planned`` (a dry run); ``failed`` with ``error``, one line, when the turn raised. ``value``
    is what the work returned (a migration's Plan)."""

    tenant: str
    status: str
    model_file: str | None = None
    model: str | None = None  # the model's name, when it loaded
    sha256: str | None = None
    seconds: float = 0.0
    value: Any = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def to_dict(self) -> dict[str, Any]:
        value = self.value.to_dict() if hasattr(self.value, "to_dict") else self.value
        return {
            "tenant": self.tenant,
            "status": self.status,
            "model": self.model,
            "model_file": self.model_file,
            "sha256": self.sha256,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "result": value,
        }


FAILED = "failed"


def one_line(exc: BaseException, engine: Engine | None = None) -> str:
    """The reason ``exc`` gives, on one line (a refused migration lists its steps across lines;
    a driver error is said as the library says it elsewhere; anything else by its class)."""
    from .engine import translate

    said = exc if isinstance(exc, MetaCRMError) else translate(exc, engine)
    if said is None:
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return "; ".join(line.strip() for line in str(said).splitlines() if line.strip()) or type(said).__name__


def run_all(
    engine_or_url: Engine | str,
    work: Callable[[Any], Any],
    *,
    tenant_map: TenantMap | None = None,
    fallback_model: Any = None,
    only: Iterable[str] | None = None,
    judge: Callable[[TenantResult], None] | None = None,
    on_result: Callable[[TenantResult], None] | None = None,
) -> list[TenantResult]:
    """Run ``work(crm)`` for every tenant of the database in turn (name order; ``only``: those
    of them), each on a CRM of its own model (``tenant_map``, else ``fallback_model``: a Model or
    the path of one) and its own engine (its schema on the shared pool, or its file). A tenant
    whose turn raises is recorded as failed, with the reason on one line, and the next one runs:
    one business's trouble never stops another's. Returns a result per tenant; ``judge(result)``
    may set a finished turn's status, and ``on_result(result)`` hears of each as it ends (a
    command prints its line then, not after the last of a thousand tenants)."""
    import time

    from ..model.metamodel import Model
    from .crm import CRM
    from .engine import translate

    base, owned = (make_engine(engine_or_url), True) if isinstance(engine_or_url, str) else (root(engine_or_url), False)
    tenant_map = tenant_map if tenant_map is not None else TenantMap()
    loaded: dict[str, Model | BaseException] = {}

    def model_of(path: str) -> Model:
        if path not in loaded:
            from ..model.loader import load_model

            try:
                loaded[path] = load_model(path, cache=True)
            except Exception as exc:  # noqa: BLE001 - said on each tenant of that model
                loaded[path] = exc
        if isinstance(loaded[path], BaseException):
            raise loaded[path]
        return loaded[path]

    results: list[TenantResult] = []
    try:
        listed = names(base)
        chosen = None if only is None else set(only)
        wanted = [name for name in listed if chosen is None or name in chosen]
        for name in wanted:
            started = time.perf_counter()
            file = tenant_map.model_for(name, None)
            if file is None and isinstance(fallback_model, str | Path):
                file = str(fallback_model)
            result = TenantResult(name, "done", model_file=file)
            engine = crm = None
            try:
                if file is not None:
                    model = model_of(file)
                elif isinstance(fallback_model, Model):
                    model = fallback_model
                else:
                    raise SetupError(f"no model for tenant {name!r}: list it in a tenants file or give a model")
                result.model, result.sha256 = model.name, model.sha256
                engine = for_tenant(base, name)
                crm = CRM(model, engine)
                crm._owns_engine = False  # the tenant's engine is closed below (PostgreSQL: the shared pool stays)
                result.value = work(crm)
            except Exception as exc:  # noqa: BLE001 - recorded on the tenant, the next one runs
                result.status, result.error = FAILED, one_line(exc, engine)
                if not isinstance(exc, MetaCRMError) and translate(exc, engine) is None:
                    log.error("tenant %s failed", name, exc_info=exc)  # not the user's doing: keep the trace
            finally:
                if crm is not None:
                    crm.close()
                if engine is not None and engine.dialect.name == "sqlite":
                    engine.dispose()  # its own file's engine
                result.seconds = time.perf_counter() - started
            if judge is not None and not result.failed:
                judge(result)
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        if owned:
            base.dispose()
    return results


def migrate_all(
    engine_or_url: Engine | str,
    tenant_map: TenantMap | None = None,
    fallback_model: Any = None,
    *,
    dry_run: bool = False,
    allow_data_loss: bool = False,
    lock_wait: float = 30.0,
    only: Iterable[str] | None = None,
    on_result: Callable[[TenantResult], None] | None = None,
) -> list[TenantResult]:
    """Migrate every tenant of the database to its own model (``tenant_map``, else
    ``fallback_model``), one after another, each under its own migration lock (PostgreSQL: the
    advisory key of its schema; SQLite: the lock row of its file) and in its own transaction: a
    tenant whose migration is refused or fails keeps its schema and every row, and the others
    still migrate. Status per tenant: ``applied``, ``up to date``, ``planned`` (``dry_run``: the
    counted plan is the result's ``value``; a plan with refused steps is ``failed``) or
    ``failed``; ``on_result`` as for :func:`run_all`."""

    def work(crm):
        return crm.migrate(dry_run=dry_run, allow_data_loss=allow_data_loss, lock_wait=lock_wait)

    def judge(result: TenantResult) -> None:
        plan = result.value
        if dry_run and plan.refusals:  # failed, with the plan that says why kept as the value
            result.status, result.error = FAILED, plan.reason()
        else:
            result.status = "up to date" if not plan else "planned" if dry_run else "applied"

    return run_all(
        engine_or_url,
        work,
        tenant_map=tenant_map,
        fallback_model=fallback_model,
        only=only,
        judge=judge,
        on_result=on_result,
    )
