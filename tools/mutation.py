#!/usr/bin/env python
"""Mutation testing of metacrm's core modules with cosmic-ray; prints the mutants that survive.

A mutant is the source with one small change (``==`` made ``!=``, ``and`` made ``or``, ``True``
made ``False``, a loop that runs zero times, a number off by one, an ``except`` that catches
something else...). The tests that cover the module run against each mutant; a mutant they
still pass ("survives") is a behaviour no test pins down. Kill it with a test, or explain it.

Not part of CI (minutes per module). Run it before resolving an issue that touches these
modules, on those modules, and put the survivors (killed or explained) in the note:

    pip install -e ".[test]" cosmic-ray
    python tools/mutation.py access moves               # named targets (see TARGETS)
    python tools/mutation.py --all                       # every core module (an hour or more)
    python tools/mutation.py metacrm/runtime/access.py --tests tests/test_access.py
    python tools/mutation.py access --sqlite-only        # halve the time: tests on SQLite only
    python tools/mutation.py csv_io --only import_csv _Importer.write   # these functions only
    python tools/mutation.py csv_io --keep               # keep the session for --rerun
    python tools/mutation.py csv_io --rerun /tmp/.../.mutation-csv_io.sqlite --tests tests/test_csv_edges.py

``--rerun`` runs only the mutants that survived a kept session, after new tests were written:
those mutants passed the old tests, so the new test files alone (``--tests``) say whether they
are killed now, in seconds instead of the whole run. See docs/mutation.md for the results.

PostgreSQL tests run when METACRM_TEST_PG_URL is set (as for pytest). The work happens in a
temporary copy of the working tree (cosmic-ray rewrites files in place), so the checkout is never
touched; ``--keep`` keeps the copy and its session database (``cr-report`` reads it).

Only a chosen set of operators runs (OPERATORS): each comparison becomes its opposite (not every
other comparison), ``and``/``or`` swap, ``not`` is added or dropped, booleans flip, loops run
zero times, ``break``/``continue`` swap, numbers move by one, ``+``/``-`` swap, exceptions
change, decorators go. The binary-operator and variable operators multiply the count for
little news; add them with ``--operators '.*'``.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> (module(s) or package to mutate, the test files that cover it)
TARGETS: dict[str, tuple[str | list[str], list[str]]] = {
    "access": ("metacrm/runtime/access.py", ["tests/test_access.py", "tests/test_access_scopes.py"]),
    "moves": (
        "metacrm/runtime/moves.py",
        ["tests/test_moves.py", "tests/test_logistics_walk.py", "tests/test_moves_edges.py"],
    ),
    "csv_io": (
        "metacrm/io/csv_io.py",
        ["tests/test_csv_io.py", "tests/test_csv_levels.py", "tests/test_csv_edges.py"],
    ),
    "duplicates": (
        ["metacrm/runtime/duplicates.py", "metacrm/runtime/fuzzy.py"],
        [
            "tests/test_duplicates.py",
            "tests/test_duplicate_thresholds.py",
            "tests/test_duplicates_scale.py",
            "tests/test_duplicates_edges.py",
        ],
    ),
    "outbox": (
        "metacrm/notify/outbox.py",
        ["tests/test_notify.py", "tests/test_outbox_claim.py", "tests/test_outbox_edges.py"],
    ),
    "migrate": (
        "metacrm/migrate",
        [
            "tests/test_migrate_rehearsal.py",
            "tests/test_migrate.py",
            "tests/test_migrate_kinds.py",
            "tests/test_migrate_safety.py",
            "tests/test_migrate_support.py",
            "tests/test_migrate_edges.py",
            "tests/test_ids.py",
        ],
    ),
    # the package is large (an hour or more on two cores): its core, planning, applying, locking
    "migrate-core": (
        ["metacrm/migrate/plan.py", "metacrm/migrate/apply.py", "metacrm/migrate/lock.py"],
        [
            "tests/test_migrate_safety.py",
            "tests/test_migrate_rehearsal.py",
            "tests/test_migrate.py",
            "tests/test_migrate_edges.py",
            "tests/test_ids.py",
        ],
    ),
}

OPERATORS = [
    r"core/ReplaceComparisonOperator_(Eq_NotEq|NotEq_Eq|Lt_GtE|GtE_Lt|Gt_LtE|LtE_Gt|Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt)$",
    r"core/ReplaceComparisonOperator_(Is_IsNot|IsNot_Is)$",
    r"core/ReplaceAndWithOr$",
    r"core/ReplaceOrWithAnd$",
    r"core/AddNot$",
    r"core/ReplaceUnaryOperator_Delete_Not$",
    r"core/ReplaceTrueWithFalse$",
    r"core/ReplaceFalseWithTrue$",
    r"core/ZeroIterationForLoop$",
    r"core/ReplaceBreakWithContinue$",
    r"core/ReplaceContinueWithBreak$",
    r"core/NumberReplacer$",
    r"core/ReplaceBinaryOperator_(Add_Sub|Sub_Add)$",
    r"core/ExceptionReplacer$",
    r"core/RemoveDecorator$",
]


def copy_tree(dest: Path) -> None:
    """The working tree as it is (tracked and untracked files, not ignored ones)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dest / src.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / src.relative_to(ROOT))


def pytest_command(tests: list[str], *, sqlite_only: bool) -> str:
    select = ' -k "not postgresql"' if sqlite_only else ""
    return f"{sys.executable} -m pytest -x -q -p no:cacheprovider -o addopts=-ra{select} {' '.join(tests)}"


def config_text(module: str | list[str], command: str, *, timeout: float) -> str:
    return (
        "[cosmic-ray]\n"
        f"module-path = {module!r}\n"
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f"test-command = {command!r}\n"
        "\n[cosmic-ray.distributor]\n"
        'name = "local"\n'
    )


def function_lines(work: Path, module: str | list[str], names: list[str]) -> dict[Path, set[int]]:
    """The lines of the functions, methods or classes named (``name`` or ``Class.method``) in
    the module(s), by file; an error for a name found nowhere."""
    paths = [work / m for m in ([module] if isinstance(module, str) else module)]
    files = [f for p in paths for f in (sorted(p.rglob("*.py")) if p.is_dir() else [p])]
    lines: dict[Path, set[int]] = {}
    found: set[str] = set()

    def visit(node, prefix: str, path: Path) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qualified = prefix + child.name
                if qualified in names:
                    found.add(qualified)
                    lines.setdefault(path, set()).update(range(child.lineno, child.end_lineno + 1))
                visit(child, qualified + ".", path)

    for path in files:
        visit(ast.parse(path.read_text(encoding="utf-8")), "", path.resolve())
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"--only: no function {', '.join(missing)} in {module}")
    return lines


def _mutant_key(m, work: Path) -> tuple[str, str, int]:
    path = Path(m.module_path)
    return ((path.relative_to(work) if path.is_absolute() else path).as_posix(), m.operator_name, m.occurrence)


def survivor_keys(session: Path) -> set[tuple[str, str, int]]:
    """The mutants (file, operator, occurrence) that survived in an earlier, kept session."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    with use_db(str(session), WorkDB.Mode.open) as db:
        return {
            _mutant_key(m, session.parent)
            for item, result in db.completed_work_items
            if result.worker_outcome == WorkerOutcome.NORMAL and result.test_outcome == TestOutcome.SURVIVED
            for m in item.mutations
        }


def keep_only(
    session: Path,
    work: Path,
    patterns: list[str],
    lines: dict[Path, set[int]] | None = None,
    only: set[tuple[str, str, int]] | None = None,
) -> tuple[int, int]:
    """Mark the mutants of other operators (or, with ``lines``, outside those lines; with
    ``only``, not among those mutants) as skipped; returns (kept, skipped)."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    wanted = re.compile("|".join(f"(?:{p})" for p in patterns))
    kept = skipped = 0
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            inside = lines is None or all(
                m.start_pos[0] in lines.get((work / m.module_path).resolve(), ()) for m in item.mutations
            )
            if only is not None and not all(_mutant_key(m, work) in only for m in item.mutations):
                inside = False
            if inside and all(wanted.match(m.operator_name) for m in item.mutations):
                kept += 1
                continue
            db.set_result(item.job_id, WorkResult(output="operator not chosen", worker_outcome=WorkerOutcome.SKIPPED))
            skipped += 1
    return kept, skipped


def survivors(session: Path, work: Path) -> tuple[list[str], dict[str, int]]:
    """One line per survivor (file:line, operator, the changed line before and after) and counts."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    lines: list[str] = []
    counts = {"killed": 0, "survived": 0, "incompetent": 0, "timeout or error": 0}
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            if result.worker_outcome != WorkerOutcome.NORMAL:
                counts["timeout or error"] += 1
                continue
            if result.test_outcome == TestOutcome.KILLED:
                counts["killed"] += 1
                continue
            if result.test_outcome == TestOutcome.INCOMPETENT:
                counts["incompetent"] += 1
                continue
            counts["survived"] += 1
            for m in item.mutations:
                path = Path(m.module_path)
                rel = path.relative_to(work) if path.is_absolute() else path
                line = m.start_pos[0]
                changed = [
                    d[1:].strip() for d in (result.diff or "").splitlines() if d.startswith("+") and d[1:2] != "+"
                ]
                try:
                    source = (work / rel).read_text(encoding="utf-8").splitlines()[line - 1].strip()
                except (OSError, IndexError):
                    source = "?"
                operator = m.operator_name.removeprefix("core/")
                after = changed[0] if changed else "(the line is removed)"
                lines.append(f"{rel}:{line}: {operator}\n    - {source}\n    + {after}")
    return sorted(lines, key=_natural), counts


def _natural(text: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def run_target(name: str, module: str | list[str], tests: list[str], args, work: Path) -> dict[str, int]:
    session = work / f".mutation-{name}.sqlite"
    config = work / f".mutation-{name}.toml"
    tests = [t for t in tests if (work / t).exists()]  # an edges file may not be written yet
    command = pytest_command(tests, sqlite_only=args.sqlite_only)
    config.write_text(config_text(module, command, timeout=args.timeout), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(work), PYTHONDONTWRITEBYTECODE="1")
    baseline = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True)
    if baseline.returncode != 0:
        print(f"{name}: the tests fail before any mutation; fix them first:\n{baseline.stdout[-2000:]}")
        return {"baseline failed": 1}
    subprocess.run(["cosmic-ray", "init", str(config), str(session)], cwd=work, env=env, check=True)
    lines = function_lines(work, module, args.only) if args.only else None
    only = survivor_keys(Path(args.rerun).resolve()) if args.rerun else None
    kept, skipped = keep_only(session, work, args.operators, lines, only)
    shown = module if isinstance(module, str) else " ".join(module)
    print(
        f"{name}: {shown}: {kept} mutants ({skipped} of other operators{' or outside --only/--rerun' if lines or only else ''} left out); tests: {' '.join(tests)}"
    )
    started = time.monotonic()
    subprocess.run(["cosmic-ray", "exec", str(config), str(session)], cwd=work, env=env, check=True)
    found, counts = survivors(session, work)
    minutes = (time.monotonic() - started) / 60
    print(f"{name}: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" ({minutes:.1f} min)")
    for line in found:
        print(line)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"names ({', '.join(TARGETS)}) or a module path with --tests")
    parser.add_argument("--all", action="store_true", help="every target in TARGETS")
    parser.add_argument(
        "--tests", nargs="+", help="test files for a module path given as the target (or instead of a named target's)"
    )
    parser.add_argument("--sqlite-only", action="store_true", help="skip the PostgreSQL half of the tests")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant before it counts as killed")
    parser.add_argument("--operators", nargs="+", default=OPERATORS, help="regular expressions of operator names")
    parser.add_argument(
        "--only", nargs="+", help="mutate only inside these functions or methods (name or Class.method)"
    )
    parser.add_argument(
        "--rerun",
        metavar="SESSION",
        help="only the mutants that survived in this kept session (.mutation-NAME.sqlite of --keep): after new tests",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy and its session databases")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows in a log as it happens
    if shutil.which("cosmic-ray") is None:
        parser.error("cosmic-ray is not installed: pip install cosmic-ray")
    chosen: list[tuple[str, str, list[str]]] = []
    for target in list(TARGETS) if args.all else args.targets:
        if target in TARGETS:
            module, tests = TARGETS[target]
            chosen.append((target, module, args.tests or tests))
        elif (ROOT / target).exists() and args.tests:
            chosen.append((Path(target).stem, target, args.tests))
        else:
            parser.error(f"unknown target {target!r}: one of {', '.join(TARGETS)}, or a path with --tests")
    if not chosen:
        parser.error("name a target, or --all")
    work = Path(tempfile.mkdtemp(prefix="metacrm-mutation-"))
    try:
        copy_tree(work)
        totals = [run_target(name, module, tests, args, work) for name, module, tests in chosen]
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if all("baseline failed" not in t for t in totals) else 1


if __name__ == "__main__":
    sys.exit(main())
