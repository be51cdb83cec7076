"""``metacrm serve`` against a hand-written Starlette app (bench/http_baseline.py) doing the same
raw SQLAlchemy Core queries, both driven by wrk over 127.0.0.1, in the same run.

    python bench/bench_http.py [--quick] [--rows 100000] [--duration 10] [--connections 32]

SQLite (a WAL file in a temporary directory), model tests/fixtures/valid/contract.yaml:
1,000 clients, 100 products, ``--rows`` deals (each with two products), made with
``crm.create_many`` before anything is timed. Both servers: one uvicorn worker, same log level
(access log on), same engine settings, same bearer token (cached 5 s by both).

Four requests, each driven for ``--duration`` seconds at ``--connections`` connections
(wrk -t2), metacrm first then the baseline:
- get: one deal by a random id, with its links (client id, products' ids);
- list: 50 deals of all of them with a filter (``amount > 500000``, about half match);
- create: a deal with a random client (a row, its stage-history row and its journal row);
- move: ``new -> qualified``, each deal once (metacrm uses the first half of the ids, the
  baseline the second half).

Printed: requests/s, p50 and p99 latency of each, the ratio metacrm/baseline of requests/s,
and the non-2xx responses (must be 0). Afterwards the history is checked: every deal moved
has exactly one move row, none other has one, and their number is the number of 2xx moves
wrk counted (plus at most one request per connection still in flight when wrk stopped).
Goals (issue 11): reads >= 0.5x the baseline's throughput; p99 <= 50 ms at 32 connections.
wrk is the Debian package (``apt-get install wrk``; installed here when missing, as root).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import metacrm  # noqa: E402
from metacrm.runtime.tokens import create_token  # noqa: E402

MODEL = ROOT / "tests" / "fixtures" / "valid" / "contract.yaml"
MIN_AMOUNT = 500_000

LUA_COMMON = """
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
local threads = {{}}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
"""
LUA = {
    "get": """
request = function()
  return wrk.format("GET", "{prefix}/deal/" .. math.random(1, {rows}))
end
""",
    "list": """
request = function()
  return wrk.format("GET", "{list_path}")
end
""",
    "create": """
request = function()
  local body = '{{"title": "bench", "amount": "100.00", "client": ' .. math.random(1, 1000) .. '}}'
  return wrk.format("POST", "{prefix}/deal", nil, body)
end
""",
    "move": """
request = function()
  local id = {first} + tid + counter * {threads}
  counter = counter + 1
  return wrk.format("POST", "{prefix}/deal/" .. id .. "/move", nil, '{{"stage": "qualified"}}')
end
""",
}


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or sys.exit("wrk: still not found after apt-get install wrk")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(url: str, rows: int) -> str:
    """The database with its clients, products and deals; the bench user's token."""
    started = time.perf_counter()
    with metacrm.connect(MODEL, url) as crm:
        crm.migrate()
        crm.add_user("bench", roles=["director"])
        crm.create_many("client", ({"name": f"Client {i}"} for i in range(1000)), returning=False)
        crm.create_many("product", ({"name": f"Product {i}"} for i in range(100)), returning=False)
        deals = (
            {
                "title": f"Deal {i}",
                "amount": f"{(i * 7919) % 1_000_000}.{(i * 37) % 100:02d}",
                "client": i % 1000 + 1,
                "products": sorted({i % 100 + 1, (i * 7 + 3) % 100 + 1}),
            }
            for i in range(rows)
        )
        crm.create_many("deal", deals, returning=False)
        token = create_token(crm, "bench")["token"]
    print(f"prepared {rows:,} deals in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return token


def start(command: list[str], env: dict, port: int, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{command[2:4]} exited {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit(f"{command} did not listen in 120 s")


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def wrk(binary: str, script: Path, base: str, duration: float, connections: int) -> dict:
    done = subprocess.run(
        [binary, "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s", "-s", str(script), base],
        capture_output=True,
        text=True,
        check=True,
    )
    text = done.stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    requests = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50": ms("50"),
        "p99": ms("99"),
        "requests": requests,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def check_history(url: str, first: int, last: int) -> tuple[int, list[str]]:
    """The number of deals moved in [first, last] and what is wrong with their history."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            moved = {
                r[0]
                for r in conn.execute(
                    text("SELECT id FROM deal WHERE id BETWEEN :a AND :b AND stage = 'qualified'"), {"a": first, "b": last}
                )
            }
            rows = dict(
                conn.execute(
                    text(
                        "SELECT record_id, count(*) FROM metacrm_history WHERE entity = 'deal' AND source = 'move' "
                        "AND record_id BETWEEN :a AND :b GROUP BY record_id"
                    ),
                    {"a": first, "b": last},
                ).all()
            )
    finally:
        engine.dispose()
    problems = []
    if set(rows) != moved:
        problems.append(f"{len(set(rows) ^ moved)} deals whose stage and move history disagree")
    if any(n != 1 for n in rows.values()):
        problems.append(f"{sum(n != 1 for n in rows.values())} deals with more than one move row")
    return len(moved), problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 deals, 3 s per run: a smoke check")
    parser.add_argument("--rows", type=int, default=None, help="deals in the database (default 100,000)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of each wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    rows = args.rows or (10_000 if args.quick else 100_000)
    duration = args.duration or (3 if args.quick else 10)
    binary = ensure_wrk()
    folder = Path(tempfile.mkdtemp(prefix="bench_http_"))
    url = f"sqlite:///{folder / 'bench.db'}"
    token = prepare(url, rows)
    half = rows // 2
    apps = {
        "metacrm": {
            "port": free_port(),
            "prefix": "/api/v1",
            "list_path": f"/api/v1/deal?where=amount%20%3E%20:min&p.min={MIN_AMOUNT}&limit=50",
            "first": 1,
            "last": half,
        },
        "baseline": {
            "port": free_port(),
            "prefix": "",
            "list_path": f"/deal?min={MIN_AMOUNT}",
            "first": half + 1,
            "last": rows,
        },
    }
    env = {"METACRM_MODEL": str(MODEL), "METACRM_DB": url, "BENCH_MODEL": str(MODEL), "BENCH_DB": url}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    procs = {
        "metacrm": start(
            [sys.executable, "-m", "metacrm", "serve", "--port", str(apps["metacrm"]["port"])],
            env,
            apps["metacrm"]["port"],
            folder / "metacrm.log",
        ),
        "baseline": start(
            [sys.executable, "-m", "uvicorn", "bench.http_baseline:create", "--factory", "--log-level", "info"]
            + ["--port", str(apps["baseline"]["port"]), "--timeout-graceful-shutdown", "30"],
            env,
            apps["baseline"]["port"],
            folder / "baseline.log",
        ),
    }
    results: dict[tuple[str, str], dict] = {}
    try:
        for kind in ("get", "list", "create", "move"):
            for name, app in apps.items():
                script = folder / f"{name}_{kind}.lua"
                script.write_text(
                    (LUA_COMMON + LUA[kind]).format(token=token, rows=rows, threads=2, **app), encoding="utf-8"
                )
                base = f"http://127.0.0.1:{app['port']}"
                if kind == "get":  # warm up: imports, caches, the first connections
                    wrk(binary, script, base, 1, args.connections)
                results[kind, name] = wrk(binary, script, base, duration, args.connections)
                r = results[kind, name]
                print(
                    f"  {kind:<6} {name:<8} {r['rps']:>8.0f} req/s  p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  "
                    f"non-2xx {r['non2xx']}",
                    file=sys.stderr,
                )
    finally:
        codes = {name: stop(proc) for name, proc in procs.items()}
    print(f"\nbench_http: {rows:,} deals on SQLite, {args.connections} connections, {duration:g} s per run, one worker")
    print(f"{'request':<8}{'metacrm req/s':>14}{'p50 ms':>8}{'p99 ms':>8}{'baseline req/s':>16}{'p50 ms':>8}"
          f"{'p99 ms':>8}{'ratio':>7}{'non-2xx':>9}")
    failures = []
    for kind in ("get", "list", "create", "move"):
        m, b = results[kind, "metacrm"], results[kind, "baseline"]
        ratio = m["rps"] / b["rps"] if b["rps"] else float("nan")
        print(
            f"{kind:<8}{m['rps']:>14.0f}{m['p50']:>8.1f}{m['p99']:>8.1f}{b['rps']:>16.0f}{b['p50']:>8.1f}"
            f"{b['p99']:>8.1f}{ratio:>7.2f}{m['non2xx'] + b['non2xx']:>9}"
        )
        if kind in ("get", "list") and ratio < 0.5:
            failures.append(f"{kind}: {ratio:.2f}x the baseline's throughput (goal >= 0.5x)")
        if m["p99"] > 50:
            failures.append(f"{kind}: metacrm p99 {m['p99']:.1f} ms (goal <= 50 ms)")
        for name, r in (("metacrm", m), ("baseline", b)):
            if r["non2xx"] or r["socket_errors"]:
                failures.append(f"{kind} {name}: {r['non2xx']} non-2xx responses {r['socket_errors']}".strip())
    for name, app in apps.items():
        moved, problems = check_history(url, app["first"], app["last"])
        counted = results["move", name]["requests"] - results["move", name]["non2xx"]
        print(f"history ({name}): {moved:,} deals moved, {counted:,} 2xx moves counted by wrk, "
              f"{'one move row each' if not problems else '; '.join(problems)}")
        failures += [f"history ({name}): {p}" for p in problems]
        if not counted <= moved <= counted + args.connections:
            failures.append(f"history ({name}): {moved} deals moved but wrk counted {counted} 2xx moves")
    if codes["metacrm"] != 0:  # (uvicorn itself re-raises SIGTERM: the baseline dies of it)
        failures.append(f"metacrm serve exited {codes['metacrm']} after SIGTERM")
    print("goals: " + ("met" if not failures else "NOT met:\n  " + "\n  ".join(failures)))
    shutil.rmtree(folder, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
