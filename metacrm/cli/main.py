"""The ``metacrm`` console command.

``get``, ``list``, ``create`` and ``move`` in their common forms run through a small parser of
their own (metacrm.cli.fast: no typer app is built, no pydantic imported to convert options);
everything else (other commands, ``--help``, anything the small parser does not know) runs
through the full typer app (metacrm.cli.typer_app), built only then. Both call the same command
functions, so output, errors and exit codes are the same."""

from __future__ import annotations

import sys


def __getattr__(name: str):
    """``app`` (the typer app), ``MODULES``, ``FAST``...: from metacrm.cli.typer_app, imported
    on first use."""
    if name.startswith("__"):
        raise AttributeError(name)
    from . import typer_app

    try:
        return getattr(typer_app, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def _command(args: list[str]) -> str | None:
    """The command name in a command line (after the root options), or None."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--log-level", "--read-db"):
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return arg
    return None


def main() -> None:  # the console script
    from .fast import run_fast

    run_fast(sys.argv[1:])  # exits when it ran the command; returns when typer must
    from .typer_app import FAST, _new_app, app

    module = FAST.get(_command(sys.argv[1:]) or "")
    if module is None:
        app()
        return
    fast = _new_app()  # the same command, options, help and errors: only the other commands are left out
    module.register(fast)
    fast()
