"""What every command shares: error mapping to exit codes, model loading, output."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

EXIT_REFUSED = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def print_problems(problems, *, stream=None) -> None:
    for problem in problems:
        typer.echo(problem.format(), file=stream or sys.stdout)


@contextmanager
def refusals() -> Iterator[None]:
    """Map metacrm errors to one line on stderr and the contract's exit codes: 2 for an
    invalid model, a database URL that does not open, a missing extra or a bad setting; 1 for
    every refused operation, and for a connection lost during one (ConnectionLost: the
    database was there, the command may simply be run again).

    Driver errors the library did not translate (a path outside a transaction) are mapped
    here as a last resort by the same rules (:func:`metacrm.runtime.engine.translate`)."""
    from ..errors import ConnectionLost, DatabaseUnavailable, MetaCRMError, ModelError, SetupError

    try:
        yield
    except ModelError as exc:
        print_problems(exc.problems, stream=sys.stderr)
        raise typer.Exit(EXIT_USAGE) from None
    except ConnectionLost as exc:  # transient, as a conflict is: not the user's to fix
        fail(str(exc))
    except (DatabaseUnavailable, SetupError) as exc:  # fixed by the user, as bad usage is
        fail(str(exc), EXIT_USAGE)
    except MetaCRMError as exc:
        fail(str(exc))
    except (OverflowError, UnicodeError, _driver_error()) as exc:
        from ..runtime.engine import translate

        error = translate(exc)
        if error is None:
            raise
        usage = isinstance(error, DatabaseUnavailable) and not isinstance(error, ConnectionLost)
        fail(str(error), EXIT_USAGE if usage else EXIT_REFUSED)


def _driver_error() -> type[BaseException]:
    from sqlalchemy.exc import DBAPIError

    return DBAPIError


# -- --read-db --------------------------------------------------------------------------------
# The streaming replica a command reads from (docs/scaling.md): the --read-db option every command
# with --db takes (added by with_read_db, as --tenant is), else the root option given before the
# command (typer_app._root; fast.run_fast), else $METACRM_READ_DB; read where the command opens
# its database (data_cmds.opened, serve).
_READ_DB: list[str | None] = [None, None]  # [the root option, the command's option]


def use_read_db(url: str | None) -> None:
    """Remember the root option ``--read-db`` for the command that runs next."""
    _READ_DB[0] = url or None


@contextmanager
def read_db_scope(url: str | None) -> Iterator[None]:
    """The command's own ``--read-db`` while it runs."""
    before = _READ_DB[1]
    _READ_DB[1] = url or None
    try:
        yield
    finally:
        _READ_DB[1] = before


def read_db() -> str | None:
    """The read replica's URL: the command's ``--read-db``, else the root one, else
    ``$METACRM_READ_DB``, else None."""
    import os

    return _READ_DB[1] or _READ_DB[0] or os.environ.get("METACRM_READ_DB") or None


def with_read_db(func: Callable) -> Callable:
    """``func`` with a ``--read-db URL`` option when it takes ``--db`` (and has no such option
    of its own, as ``serve``); read_db() falls back to the root option, then the environment."""
    import functools
    import inspect
    from typing import Annotated

    signature = inspect.signature(func, eval_str=True)
    if "db" not in signature.parameters or "read_db" in signature.parameters:
        return func
    if getattr(func, "_no_tenant", False):  # commands on the database itself (tenant create...): no replica either
        return func
    option = Annotated[
        str | None,
        typer.Option(  # no envvar here: $METACRM_READ_DB must not override the root option given before the command
            "--read-db",
            help="A streaming replica of --db: lists, search and reports read from it "
            "(default: $METACRM_READ_DB; docs/scaling.md).",
        ),
    ]

    @functools.wraps(func)
    def command(*args, read_db: str | None = None, **kwargs):
        with read_db_scope(read_db):
            return func(*args, **kwargs)

    extra = inspect.Parameter("read_db", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=option)
    command.__signature__ = signature.replace(parameters=[*signature.parameters.values(), extra])  # type: ignore[attr-defined]
    command.__annotations__ = {**func.__annotations__, "read_db": option}
    return command


def load(model_path: str):
    """The model at that path (from the compiled-model cache when its files are unchanged),
    or its problems on stderr and exit 2."""
    from ..model.loader import load_model
    from .output import DISPLAY_ZONE

    with refusals():
        model = load_model(model_path, cache=True)
    DISPLAY_ZONE.set(model.timezone if model.timezone != "UTC" else None)
    return model


def missing_database(url: str) -> str | None:
    """Why ``url`` names no database, for an SQLite file that does not exist (opening it
    would create an empty one); None otherwise. Only commands that build a database
    (``migrate``, ``restore``, ``demo``) may create the file."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # a malformed URL: make_engine says what is wrong with it
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    if parsed.query.get("uri") in ("true", "1"):
        return None
    from pathlib import Path

    if Path(database).exists() or not Path(database).parent.is_dir():
        return None  # no folder: opening fails (DatabaseUnavailable) without creating anything
    return f"no database at {database}: check --db (or $METACRM_DB); `metacrm migrate` creates it"


def usage_error(message: str) -> NoReturn:
    fail(message, EXIT_USAGE)


def choose(value: str, allowed, what: str) -> str:
    """``value`` if it is one of ``allowed``; else exit 2 naming the allowed ones."""
    from ..model.suggest import did_you_mean

    allowed = list(allowed)
    if value not in allowed:
        hint = did_you_mean(value, allowed)
        usage_error(
            f"unknown {what} '{value}'; {what}s: {', '.join(allowed) or 'none'}" + (f" ({hint})" if hint else "")
        )
    return value


Command = Callable[..., None]


# -- --tenant ---------------------------------------------------------------------------------
# The tenant a command works in (docs/scaling.md): set around the command by the --tenant option
# every command with --db takes (added by with_tenant when the typer app registers it; the fast
# path of metacrm.cli.fast sets it the same way), read where the command opens its database.
_TENANT: list[str | None] = [None]


def current_tenant() -> str | None:
    return _TENANT[0]


@contextmanager
def tenant_scope(name: str | None) -> Iterator[None]:
    before = _TENANT[0]
    _TENANT[0] = name or None
    try:
        yield
    finally:
        _TENANT[0] = before


def with_tenant(func: Callable) -> Callable:
    """``func`` with a ``--tenant NAME`` option (env METACRM_TENANT) when it takes ``--db``: the
    command runs in that tenant. Commands that name a tenant themselves (``tenant create``) or
    take no database are returned as they are."""
    import functools
    import inspect
    from typing import Annotated

    signature = inspect.signature(func, eval_str=True)  # typer reads the evaluated annotations of __signature__
    if "db" not in signature.parameters or "tenant" in signature.parameters or getattr(func, "_no_tenant", False):
        return func
    option = Annotated[
        str | None,
        typer.Option(
            "--tenant",
            envvar="METACRM_TENANT",
            help="Work in this tenant of the database (`metacrm tenant list`; docs/scaling.md).",
        ),
    ]

    @functools.wraps(func)
    def command(*args, tenant: str | None = None, **kwargs):
        with tenant_scope(tenant):
            return func(*args, **kwargs)

    extra = inspect.Parameter("tenant", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=option)
    command.__signature__ = signature.replace(parameters=[*signature.parameters.values(), extra])  # type: ignore[attr-defined]
    command.__annotations__ = {**func.__annotations__, "tenant": option}
    return command


def tenant_engine(engine):
    """``engine`` (made by the command for --db, owned by it) turned into the engine of the
    current --tenant, if one is given: NotFound (exit 1) naming the tenants when it does not exist."""
    tenant = current_tenant()
    if tenant is None:
        return engine
    from ..runtime.crm import _tenant_engine

    return _tenant_engine(engine, True, tenant)[0]


def tenant_model_file(model: str) -> str:
    """The model file a command of the current --tenant works with: the tenants file's
    (--tenants-file is migrate's; here $METACRM_TENANTS_FILE or ./tenants.yaml) when it lists the
    tenant (or has a default) and no model was named (``--model``/``$METACRM_MODEL`` left at
    ``model.yaml``); else ``model``. Problems of the tenants file: FILE:LINE:COL, exit 2."""
    tenant = current_tenant()
    if tenant is None or model != "model.yaml":
        return model
    from ..runtime.tenants import TenantMap

    with refusals():
        return TenantMap.find(None).model_for(tenant, model) or model
