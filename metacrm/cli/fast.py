"""A typer-free path for the hot data commands: ``get``, ``list``, ``create`` and ``move``.

Typer builds a click command from the signatures of an app's commands and converts every
option through pydantic: on a one-record command that is a good part of the start-up. This
module parses the common forms of those four commands itself and calls the very functions
typer would call (metacrm.cli.data_cmds, metacrm.cli.stage_cmds) with the same values.

It runs a command line only when it understands all of it the way typer would: the command
name first, then its arguments and its known options (``--opt VALUE``, ``--opt=VALUE``, short
``-x VALUE``, flags), in any order, with the same environment variables. Anything else: a
root option but ``--read-db`` (``--log-level``, ``--version``), ``--help``, an unknown or misspelt option, a
missing or extra argument, a value typer would refuse (``--limit -1``, ``--format xml``, an
integer that is not plain digits), ``--``, shell completion: :func:`run_fast` returns and the
full typer app runs the line, so help, usage errors and their exit codes are typer's own
(tests/test_cli_fast.py compares both paths)."""

from __future__ import annotations

import os
import re
import sys

STR, FLAG, INT, COUNT, FORMAT = "str", "flag", "int", "count", "format"

_COMMON = {
    "--model": ("model", STR),
    "-m": ("model", STR),
    "--db": ("db", STR),
    "--tenant": ("tenant", STR),
    "--read-db": ("read_db", STR),
    "--as": ("as_user", STR),
    "--format": ("format", FORMAT),
    "-f": ("format", FORMAT),
}
_COLUMNS = {"--columns": ("columns", STR), "-c": ("columns", STR), "--wide": ("wide", FLAG)}
# command -> (module, function, positional parameters, variadic parameter or None, options)
COMMANDS: dict[str, tuple[str, str, tuple[str, ...], str | None, dict[str, tuple[str, str]]]] = {
    "get": ("data_cmds", "get", ("entity", "record_id"), None, {**_COLUMNS, **_COMMON}),
    "list": (
        "data_cmds",
        "list_",
        ("entity",),
        None,
        {
            "--where": ("where", STR),
            "-w": ("where", STR),
            "--order-by": ("order_by", STR),
            "-o": ("order_by", STR),
            "--limit": ("limit", COUNT),
            "-n": ("limit", COUNT),
            "--offset": ("offset", COUNT),
            **_COLUMNS,
            "--expand": ("expand", FLAG),
            "--archived": ("archived", FLAG),
            "--with-archived": ("with_archived", FLAG),
            **_COMMON,
        },
    ),
    "create": ("data_cmds", "create", ("entity",), "values", dict(_COMMON)),
    "move": (
        "stage_cmds",
        "move",
        ("entity", "record_id", "stage"),
        None,
        {"--note": ("note", STR), "--version": ("version", INT), **_COMMON},
    ),
}
ENVVARS = {"model": "METACRM_MODEL", "db": "METACRM_DB", "as_user": "METACRM_USER", "tenant": "METACRM_TENANT"}
# $METACRM_READ_DB is read by common.read_db() when no --read-db is given (it must not beat the root option)
# the environment typer reads for the root command (--log-level) or shell completion: leave those to it
_TYPER_ENV = ("METACRM_LOG", "_METACRM_COMPLETE", "_TYPER_COMPLETE_ARGS")
_INTEGERS = {INT: re.compile(r"0|-?[1-9][0-9]*"), COUNT: re.compile(r"0|[1-9][0-9]*")}
_FORMATS = ("table", "json", "csv")
_SURROGATE = re.compile("[\udc80-\udcff]")  # undecodable bytes of argv: typer's conversion decides


class _NotMine(Exception):
    """The command line is not one this parser runs: typer's app must."""


def parse(args: list[str]) -> tuple[str, dict] | None:
    """``(command, keyword arguments of its function)`` for a command line this parser runs
    exactly as typer would, else None. The root option ``--read-db`` may come first (see
    :func:`root_options`); it is not among the keywords."""
    try:
        args = root_options(args)[1]
    except _NotMine:
        return None
    if not args or args[0] not in COMMANDS or any(os.environ.get(name) for name in _TYPER_ENV):
        return None
    try:
        return args[0], _keywords(args[0], args[1:])
    except _NotMine:
        return None


def root_options(args: list[str]) -> tuple[str | None, list[str]]:
    """``(--read-db's value or None, the rest of the line)``: the one root option this parser
    knows, given before the command (``metacrm --read-db URL list deal``)."""
    read_db = None
    while args and args[0].startswith("--read-db"):
        name, equals, value = args[0].partition("=")
        if name != "--read-db" or (not equals and len(args) < 2):
            raise _NotMine
        if not equals:
            value, args = args[1], args[1:]
        if _SURROGATE.search(value):
            raise _NotMine
        read_db, args = value, args[1:]
    return read_db, args


def _keywords(command: str, args: list[str]) -> dict:
    positional, variadic, options = COMMANDS[command][2:]
    values: dict = {}
    given: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if _SURROGATE.search(arg):
            raise _NotMine
        if not arg.startswith("-"):
            given.append(arg)
            continue
        name, equals, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name not in options:
            raise _NotMine  # --help, --, an unknown option, -fjson...: typer says what it is
        target, kind = options[name]
        if kind == FLAG:
            if equals:
                raise _NotMine
            values[target] = True
            continue
        if not equals:
            if i >= len(args):
                raise _NotMine  # typer: "Option '--x' requires an argument."
            value = args[i]
            i += 1
            if _SURROGATE.search(value):
                raise _NotMine
        values[target] = _converted(kind, value)
    if len(given) < len(positional) or (variadic is None and len(given) > len(positional)):
        raise _NotMine
    values.update(zip(positional, given, strict=False))
    if variadic is not None:
        values[variadic] = given[len(positional) :] or None
    for target, envvar in ENVVARS.items():
        if target not in values and os.environ.get(envvar):
            values[target] = os.environ[envvar]
    return values


def _converted(kind: str, value: str):
    if kind == STR:
        return value
    if kind == FORMAT:
        if value not in _FORMATS:
            raise _NotMine
        from .output import Format

        return Format(value)
    if not _INTEGERS[kind].fullmatch(value):
        raise _NotMine
    return int(value)


def run_fast(args: list[str]) -> None:
    """Run the command line and exit (with the command's exit code) if this parser runs it;
    return (having done nothing) if typer must."""
    parsed = parse(args)
    if parsed is None:
        return
    command, keywords = parsed
    module_name, function_name = COMMANDS[command][:2]
    import importlib

    import typer

    from .common import read_db_scope, use_read_db

    use_read_db(root_options(args)[0])

    function = getattr(importlib.import_module(f"{__package__}.{module_name}"), function_name)
    from .common import tenant_scope

    tenant = keywords.pop("tenant", None)
    read_db = keywords.pop("read_db", None)
    # what typer's standalone main does around a command (typer.core._main)
    try:
        try:
            with tenant_scope(tenant), read_db_scope(read_db):
                function(**keywords)
        except EOFError:
            print(file=sys.stderr)
            print("Aborted!", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)
        except OSError as exc:
            import errno

            if exc.errno != errno.EPIPE:
                raise
            from typer._click.utils import PacifyFlushWrapper

            sys.stdout = PacifyFlushWrapper(sys.stdout)
            sys.stderr = PacifyFlushWrapper(sys.stderr)
            sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(0)
