"""The scaled sandbox's build, several times in a row: does it take the same time each time?

    python -m bench.build --scale 1000000 [--builds 2] [--keep-env PATH] [--timeout S]

Each build is ``opsgate sandbox up --scale N`` in a process of its own, as an operator
starts it, timed from the start to the line saying it is up (its settings file written).
A build's plans must not depend on luck (statistics the autovacuum daemon has or has
not gathered yet, a cursor's plan): the same build, repeated, should take about the same
time. Per build: wall time, each migration's time from the ledger (``started_at`` to
``finished_at``), the sandbox process's own peak RSS (VmHWM: the PostgreSQL server, its
child, is not counted), the load average before and after, the target's counts and
size. A build that is not up within ``--timeout`` seconds (default 2400) is stopped and
recorded as timed out, with the queries its server was running.

Every build is stopped (SIGTERM) once measured, and its stop timed, but the last with
``--keep-env PATH``: that one stays up, its settings in PATH, for ``bench.run
--sandbox-env PATH`` and the gate; stop it with SIGTERM to the pid printed (its process
group). Writes bench/results/<date>-<scale>-build.json and bench/results/latest-build.md.
Nothing here is a test: no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.run import machine_meta, vm_hwm_kib

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
UP_LINE = "opsgate sandbox: up"


def _url(env_file: Path) -> str:
    from opsgate import envfile

    return envfile.read(env_file, str(env_file)).values({})["DATABASE_URL"]


def _target(env_file: Path) -> dict[str, Any]:
    """Counts, size and each migration's time, read from the built target."""
    with psycopg.connect(_url(env_file), autocommit=True) as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                  for t in ("kb_entities", "kb_edges", "kb_entity_tags")}
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
        migrations = [
            {"name": name, "status": status, "s": round(float(secs), 1)}
            for name, status, secs in conn.execute(
                "SELECT name, status, extract(epoch FROM finished_at - started_at) "
                "FROM admin_migrations ORDER BY id")]
    return {"counts": counts, "database_bytes": size, "migrations": migrations}


def _activity(env_file: Path) -> list[str]:
    """What the server runs now (for a build that did not finish in time)."""
    if not env_file.exists():
        return []
    try:
        with psycopg.connect(_url(env_file), autocommit=True, connect_timeout=5) as conn:
            return [f"{state} {secs:.0f}s: {query[:300]}" for state, secs, query in conn.execute(
                "SELECT state, extract(epoch FROM now() - query_start), query "
                "FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query <> ''")]
    except (psycopg.Error, KeyError):
        return []


def _stop(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM to the sandbox's process group; seconds until it exited."""
    t = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return round(time.monotonic() - t, 2)


def build_once(scale: int, env_file: Path, log: Path, timeout: float, keep: bool
               ) -> dict[str, Any]:
    """One ``opsgate sandbox up --scale``: timed to its "up" line, then measured, then
    stopped unless ``keep``."""
    load_before = os.getloadavg()
    cmd = [sys.executable, "-c", "from opsgate.cli import main; raise SystemExit(main())",
           "sandbox", "up", "--scale", str(scale), "--env-file", str(env_file)]
    t = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
    result: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                              "load_before": [round(x, 2) for x in load_before]}
    hwm = 0
    while UP_LINE not in log.read_text(errors="replace"):
        hwm = max(hwm, vm_hwm_kib(proc.pid))
        if proc.poll() is not None:
            result.update(status="failed", wall_s=round(time.monotonic() - t, 1),
                          log_tail=log.read_text(errors="replace")[-2000:])
            return result
        if time.monotonic() - t > timeout:
            result.update(status="timed out", wall_s=round(time.monotonic() - t, 1),
                          running=_activity(env_file), stop_s=_stop(proc),
                          log_tail=log.read_text(errors="replace")[-2000:])
            return result
        time.sleep(0.5)
    result.update(status="up", wall_s=round(time.monotonic() - t, 1),
                  sandbox_rss_mib=round(max(hwm, vm_hwm_kib(proc.pid)) / 1024, 1),
                  load_after=[round(x, 2) for x in os.getloadavg()])
    try:
        result.update(_target(env_file))
    except BaseException:
        _stop(proc)
        raise
    if keep:
        result.update(kept_pid=proc.pid, env_file=str(env_file))
    else:
        result["stop_s"] = _stop(proc)
    return result


def markdown(out: dict[str, Any]) -> str:
    lines = [f"# Scaled sandbox builds ({out['meta']['date']})", "",
             f"Machine: {out['meta']['machine']}. `opsgate sandbox up --scale "
             f"{out['scale']:,}`, {len(out['builds'])} builds in a row; wall time to the "
             "\"up\" line; migrations' times from the ledger; RSS: the sandbox process's "
             "own peak (the server not counted).", "",
             "| build | status | wall s | migrations (s) | sandbox RSS MiB | load before | "
             "load after | stop s |", "|---|---|---|---|---|---|---|---|"]
    for i, b in enumerate(out["builds"], 1):
        migs = ", ".join(f"{m['name'].split('_')[1]} {m['s']}" for m in b.get("migrations", []))
        lines.append(
            f"| {i} | {b['status']} | {b['wall_s']} | {migs} | {b.get('sandbox_rss_mib', '')} | "
            f"{' / '.join(str(x) for x in b['load_before'])} | "
            f"{' / '.join(str(x) for x in b.get('load_after', []))} | "
            f"{b.get('stop_s', 'kept up')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--builds", type=int, default=2)
    p.add_argument("--keep-env", type=Path, default=None, metavar="PATH",
                   help="keep the last build up, its settings in PATH (must not exist)")
    p.add_argument("--timeout", type=float, default=2400.0, metavar="S")
    args = p.parse_args()
    if args.keep_env is not None and args.keep_env.exists():
        p.error(f"{args.keep_env} exists; the sandbox writes a new settings file")
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = machine_meta()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    builds = []
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        for i in range(args.builds):
            last = i == args.builds - 1
            keep = last and args.keep_env is not None
            env_file = args.keep_env.resolve() if keep else Path(tmp) / f"build{i}.env"
            log = (env_file.with_suffix(".log") if keep else Path(tmp) / f"build{i}.log")
            b = build_once(args.scale, env_file, log, args.timeout, keep)
            builds.append(b)
            print(json.dumps(b), flush=True)
            if b["status"] != "up":
                break
    out = {"meta": meta, "scale": args.scale, "builds": builds}
    (RESULTS / f"{stamp}-{args.scale}-build.json").write_text(json.dumps(out, indent=2))
    latest = RESULTS / "latest-build.md"
    latest.write_text(markdown(out))
    print(latest.read_text())


if __name__ == "__main__":
    main()
