"""The shared-object thread stress of tests/test_threads.py, repeated: each run in its own
process under a timeout (a hang is a failed run), on a SQLite file, sqlite:///:memory: and
PostgreSQL ($METACRM_TEST_PG_URL, skipped when unset).

    python tools/stress.py --runs 20 --timeout 300 [--target file|memory|postgresql ...]

Prints one line per run, then per target: runs passed and the median duration. Exit 1 when a
run failed or hung.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("file", "memory", "postgresql")

ONE_RUN = """\
import sys
sys.path.insert(0, {tests!r})
import metacrm, test_threads
from pathlib import Path
model = Path({model!r})
model.write_text(test_threads.MODEL, encoding="utf-8")
url = {url!r}
if url.startswith("postgresql"):
    url += "&application_name=" + test_threads.APP
with metacrm.connect(model, url) as crm:
    crm.migrate()
    test_threads.stress(crm)
"""


def url_for(target: str, work: Path) -> str | tuple[str, str] | None:
    """The URL of a run (for PostgreSQL with the fresh schema it runs in), None when not configured."""
    if target == "file":
        return f"sqlite:///{work / 'stress.db'}"
    if target == "memory":
        return "sqlite:///:memory:"
    base = os.environ.get("METACRM_TEST_PG_URL")
    if not base:
        return None
    schema = f"stress_{uuid.uuid4().hex[:10]}"
    return base + ("&" if "?" in base else "?") + f"options=-csearch_path%3D{schema}", schema


def run_once(target: str, timeout: float) -> tuple[bool, float, str]:
    """One run in a fresh process: (passed, seconds, the last line of its error output)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        got = url_for(target, work)
        schema = None
        if isinstance(got, tuple):
            got, schema = got
            _schema(schema, create=True)
        code = ONE_RUN.format(tests=str(ROOT / "tests"), model=str(work / "m.yaml"), url=got)
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        started = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
            )
            passed, why = done.returncode == 0, (done.stderr.strip().splitlines() or [""])[-1]
        except subprocess.TimeoutExpired:
            passed, why = False, f"hung: still running after {timeout:.0f} s"
        finally:
            if schema:
                _schema(schema, create=False)
        return passed, time.monotonic() - started, why


def _schema(name: str, *, create: bool) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(os.environ["METACRM_TEST_PG_URL"], isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}" if create else f"DROP SCHEMA IF EXISTS {name} CASCADE"))
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--target", action="append", choices=TARGETS, help="default: all three")
    args = parser.parse_args(argv)
    failed = False
    for target in args.target or TARGETS:
        if target == "postgresql" and not os.environ.get("METACRM_TEST_PG_URL"):
            print(f"{target}: skipped (METACRM_TEST_PG_URL is not set)", flush=True)
            continue
        durations, passed = [], 0
        for n in range(1, args.runs + 1):
            ok, seconds, why = run_once(target, args.timeout)
            durations.append(seconds)
            passed += ok
            print(f"{target} run {n}: {'passed' if ok else 'FAILED'} in {seconds:.1f} s{'' if ok else ': ' + why}",
                  flush=True)
        failed |= passed < args.runs
        print(f"{target}: {passed}/{args.runs} runs passed, median {statistics.median(durations):.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
