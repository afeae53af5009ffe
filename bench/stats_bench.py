"""Drift and a backfill with fresh planner statistics and without any: do plans depend
on luck?

    python -m bench.stats_bench --sandbox-env PATH [--migration NAME ...] [--cap S]

Against a sandbox already up (``opsgate sandbox up --scale N --env-file PATH``), in two
states of the public tables' statistics, each prepared and timed first:

- ``fresh``: ``ANALYZE`` of every table;
- ``none``: no statistics at all, as on tables just written and never analyzed: their
  ``pg_statistic`` rows deleted, ``reltuples`` -1 and ``relpages`` 0 in ``pg_class``
  (what PostgreSQL records for a table never vacuumed or analyzed), autovacuum off for
  those tables while measuring (it would otherwise analyze them behind the bench's back).
  Needs a superuser, as the plain sandbox's owner is.

In each state: knowledge drift (``bench.tasks opsgate_drift``, the payload from the
sandbox's file, as the check reads it at scale), then each ``--migration`` (default the
kb backfill; ``--migration none`` for drift alone) as a forced dry run through the runner (apply, the runner's ANALYZE of
what apply wrote, verify, all rolled back: the sandbox is left as it was), with its
phases' times. In the ``none`` state each migration also runs with the runner's ANALYZE
skipped (what the runner did before it had one), stopped by SIGTERM after ``--cap``
seconds (default 600). At the end the tables' autovacuum setting is reset and every table
analyzed again.

Writes bench/results/<date>-<scale>-stats.json and bench/results/latest-stats.md.
Nothing here is a test: no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.run import ROOT, machine_meta, tree_peak
from opsgate import envfile

RESULTS = ROOT / "bench" / "results"
BACKFILL = "20260213_1004_legacy_to_neon_kb_backfill"


def _tables(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND "
        "relnamespace = 'public'::regnamespace ORDER BY relname")]


def fresh(conn: psycopg.Connection[Any]) -> None:
    for t in _tables(conn):
        conn.execute(sql.SQL("ALTER TABLE {} RESET (autovacuum_enabled)").format(
            sql.Identifier(t)))
    conn.execute("ANALYZE")


def none(conn: psycopg.Connection[Any]) -> None:
    for t in _tables(conn):
        ident = sql.Identifier(t)
        conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(ident))
        conn.execute("DELETE FROM pg_statistic WHERE starelid = %s::regclass", (t,))
        conn.execute("UPDATE pg_class SET reltuples = -1, relpages = 0, relallvisible = 0 "
                     "WHERE oid = %s::regclass", (t,))


def run_task(name: str, args: dict[str, Any], env: dict[str, str], cap: float | None
             ) -> dict[str, Any]:
    """``bench.tasks NAME`` in its own process: wall time, the tree's peak RSS, its
    answer; SIGTERM after ``cap`` seconds."""
    load = os.getloadavg()[0]
    t = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bench.tasks", name, json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    timer = threading.Timer(cap, lambda: proc.send_signal(signal.SIGTERM)) if cap else None
    if timer is not None:
        timer.start()
    with tree_peak(proc.pid) as peak:
        out, err = proc.communicate()
        wall = time.monotonic() - t
    if timer is not None:
        timer.cancel()
    lines = out.decode().strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        answer = {"stdout": lines[-1][:300]}
    return {"wall_s": round(wall, 2), "rss_mib": round(peak.tree_kib / 1024, 1),
            "load1": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
            "exit": proc.returncode, "capped": bool(cap) and wall >= (cap or 0.0),
            "answer": answer, "stderr_tail": err.decode(errors="replace")[-600:]
            if proc.returncode else ""}


def measure_state(state: str, url: str, env: dict[str, str], payload: str,
                  migrations: list[str], mdir: str, cap: float) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        t = time.monotonic()
        (fresh if state == "fresh" else none)(conn)
        prepared = round(time.monotonic() - t, 2)
    out: dict[str, Any] = {"state": state, "prepare_s": prepared, "runs": []}
    runs: list[tuple[str, str, dict[str, Any], float | None]] = [
        ("knowledge drift", "opsgate_drift", {"payload": payload}, None)]
    for m in migrations:
        margs = {"name": m, "source": payload, "migrations_dir": mdir}
        runs.append((f"{m} (forced dry run)", "opsgate_migration", margs, None))
        if state == "none":
            runs.append((f"{m} (forced dry run, the runner's ANALYZE skipped)",
                         "opsgate_migration", {**margs, "analyze": False}, cap))
    for label, task, args, task_cap in runs:
        r = {"what": label, **run_task(task, args, env, task_cap)}
        out["runs"].append(r)
        print(json.dumps(r), flush=True)
    return out


def markdown(out: dict[str, Any]) -> str:
    lines = [f"# Planner statistics at {out['scale']:,} entities ({out['meta']['date']})", "",
             f"Machine: {out['meta']['machine']}.", "",
             "| statistics | what | wall s | phases s | client RSS MiB | load before / after |",
             "|---|---|---|---|---|---|"]
    for st in out["states"]:
        for r in st["runs"]:
            ans = r["answer"]
            phases = ", ".join(f"{k} {v:.1f}" for k, v in (ans.get("timings_s") or {}).items()
                               if isinstance(v, (int, float)))
            status = (" (stopped at the cap)" if r["capped"]
                      else "" if r["exit"] == 0 else f" (exit {r['exit']})")
            lines.append(f"| {st['state']} (prepared in {st['prepare_s']} s) | {r['what']}"
                         f"{status} | {r['wall_s']:.1f} | {phases} | {r['rss_mib']:.0f} | "
                         f"{r['load1']:.2f} / {r['load_after']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sandbox-env", type=Path, required=True, metavar="PATH")
    p.add_argument("--migration", action="append", default=[], metavar="NAME")
    p.add_argument("--state", action="append", choices=("fresh", "none"), default=[])
    p.add_argument("--cap", type=float, default=600.0, metavar="S")
    args = p.parse_args()
    env_file = args.sandbox_env.resolve()
    values = envfile.read(env_file, str(env_file)).values({})
    url, payload = values["DATABASE_URL"], values["OPSGATE_LEGACY_PAYLOAD_FILE"]
    env = {**os.environ, "BENCH_URL": url, "BENCH_ENV_FILE": str(env_file)}
    mdir = values.get("OPSGATE_MIGRATIONS_DIR", str(ROOT / "migrations"))
    with psycopg.connect(url, autocommit=True) as conn:
        scale = conn.execute("SELECT count(*) FROM kb_entities").fetchone()[0]  # type: ignore[index]
    states = []
    try:
        for state in args.state or ["fresh", "none"]:
            migrations = [m for m in args.migration or [BACKFILL] if m != "none"]
            states.append(measure_state(state, url, env, payload, migrations, mdir,
                                        args.cap))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            fresh(conn)
    meta = machine_meta()
    out = {"meta": meta, "scale": scale, "states": states}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stamp}-{scale}-stats.json").write_text(json.dumps(out, indent=2))
    (RESULTS / "latest-stats.md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
