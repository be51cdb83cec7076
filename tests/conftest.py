from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("METACRM_TEST_PG_URL")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MAVEN_DATA = ROOT / "tests" / "data" / "maven-crm"  # the public sample the tests carry (its README: source, licence)

# The compiled-model and grammar caches (metacrm.model.cache) of this test process and of the
# commands it starts live in a temporary directory, never in the user's ~/.cache. Each xdist
# worker has its own; entries are written under a temporary name and renamed, so concurrent
# commands sharing one are safe too.
_CACHE_DIR = tempfile.mkdtemp(prefix="metacrm-test-cache-")
os.environ["METACRM_CACHE_DIR"] = _CACHE_DIR
os.environ.pop("METACRM_NO_CACHE", None)
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_module(name: str, *, why: str):
    """The module, imported; when it is missing the tests that need it skip, except in CI
    (``CI=true``), where they fail: CI must run every test. At module level (pytest.importorskip
    there) a failure is a collection error, which fails the run."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        reason = f"{name} is not installed ({why}): {exc}"
        if in_ci():
            pytest.fail(f"CI requires {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)


def require_path(path: Path, *, what: str) -> Path:
    """``path``, which must exist: missing, the tests that read it skip, in CI they fail."""
    if not path.exists():
        reason = f"{what} is not at {path}"
        if in_ci():
            pytest.fail(f"CI requires {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)
    return path


@pytest.fixture
def root() -> Path:
    return ROOT


def _pg_unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here (None when they can)."""
    if not PG_URL:
        return "METACRM_TEST_PG_URL is not set"
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"
        return f"PostgreSQL at METACRM_TEST_PG_URL is unreachable: {exc.__class__.__name__}: {exc}"
    return None


_PG_REASON: list = []


def pg_reason() -> str | None:
    if not _PG_REASON:
        _PG_REASON.append(_pg_unavailable())
    return _PG_REASON[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path):
    """An empty database on each dialect: a SQLite file, or a fresh PostgreSQL schema
    (selected through search_path) dropped after the test. In CI a missing or unreachable
    PostgreSQL fails the test instead of skipping it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crm.db'}"
        return
    reason = pg_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"CI requires PostgreSQL: {reason}")
        pytest.skip(reason)
    with pg_schema_url() as url:
        yield url


@contextmanager
def pg_schema_url():
    """A URL of a fresh PostgreSQL schema (selected through search_path), dropped afterwards."""
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def dump_database(engine) -> dict[str, list]:
    """Every row of every table the database holds (reflected, so the CRM's own tables, join
    tables, journal, history, outbox and the recorded model included), sorted: two dumps are
    equal when nothing was written in between."""
    from sqlalchemy import MetaData, select

    metadata = MetaData()
    with engine.connect() as conn:
        metadata.reflect(conn)
        return {
            name: sorted(repr(tuple(row)) for row in conn.execute(select(table)))
            for name, table in sorted(metadata.tables.items())
        }


def pytest_configure(config) -> None:
    """The coverage floor (pyproject's fail_under) is for the whole suite, run as README says:
    a run of some files or some tests (paths, -k, -m, --lf, --deselect) prints the coverage but
    does not fail on it. Add --no-cov for a quicker run of a few tests."""
    plugin = config.pluginmanager.getplugin("_cov")
    options = getattr(plugin, "options", None)
    if options is None or getattr(options, "cov_fail_under", None) is None:
        return
    whole = (
        config.args_source == pytest.Config.ArgsSource.TESTPATHS
        and not config.option.keyword
        and not config.option.markexpr
        and not getattr(config.option, "lf", False)
        and not getattr(config.option, "deselect", None)
    )
    if not whole:
        options.cov_fail_under = None


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config) -> None:
    """After pytest-cov's table: line and branch coverage apart (its TOTAL is the two combined)."""
    import json
    import tempfile

    plugin = config.pluginmanager.getplugin("_cov")
    controller = getattr(plugin, "cov_controller", None)
    cov = getattr(controller, "cov", None)
    if cov is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "coverage.json"
        try:
            cov.json_report(outfile=str(out))
        except Exception as exc:  # noqa: BLE001 - no data (e.g. --collect-only): say so, never fail the run
            terminalreporter.write_line(f"coverage: no line/branch figures ({exc.__class__.__name__}: {exc})")
            return
        totals = json.loads(out.read_text(encoding="utf-8"))["totals"]
    lines = f"{totals['percent_statements_covered']:.2f}% ({totals['covered_lines']}/{totals['num_statements']})"
    line = f"coverage of metacrm: lines {lines}"
    if totals.get("num_branches"):
        branches = f"{totals['percent_branches_covered']:.2f}% ({totals['covered_branches']}/{totals['num_branches']})"
        line += f", branches {branches}, combined {totals['percent_covered']:.2f}%"
    terminalreporter.write_line(line)
