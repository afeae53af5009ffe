"""A drill stopped by SIGTERM at scale: how long until the gate has exited and cleaned up?

    python -m bench.stop_bench --sandbox-env PATH [--phase dump|restore] [--after S]
                               [--signal TERM|INT] [--reps N]

The gate's drill (``opsgate gate`` with ``RUN_OPS_NEON_DRILL`` alone, its default local
restore) on a sandbox already up, as ``tests/integration/test_stop_signals.py`` runs it at
small scale: once pg_dump (or pg_restore) is seen running below it, and ``--after``
seconds more (default 5: well into a 1M dump), the signal goes to the gate's pid alone,
as CI and ``timeout`` send it. Recorded: seconds until the gate exited (GitHub's grace
is 7.5 s), its exit code, the processes that ran below it and still live a second later,
the dump folders left in its temporary folder, the local copy's data folder left
(wherever it lives), the client programs' backends left on the server.

Writes bench/results/<date>-<scale>-stop.json. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.run import ROOT, machine_meta
from opsgate import envfile
from opsgate.gate import CHECKS
from opsgate.verify.drill import DUMP_FOLDER_PREFIX
from tests.stop_helpers import GRACE_S, descendants, stop, wait_for

RESULTS = ROOT / "bench" / "results"
CLIENTS = ["pg_dump", "pg_restore", "psql"]


def _backends(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [f"{r[0]} {r[1]}" for r in conn.execute(
            "SELECT application_name, state FROM pg_stat_activity "
            "WHERE application_name = ANY(%s) AND pid <> pg_backend_pid()", (CLIENTS,))]


def _cluster_folders(pid: int) -> list[Path]:
    """The data folders of the PostgreSQL servers below ``pid`` (the drill's local copy:
    ``postgres -D <folder>``), wherever they live (``/dev/shm`` or the temporary folder)."""
    found = []
    for child, name in descendants(pid).items():
        if name != "postgres":
            continue
        try:
            args = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-D" in args[:-1]:
            found.append(Path(os.fsdecode(args[args.index(b"-D") + 1])))
    return found


def once(env_file: Path, url: str, phase: str, after: float, sig: signal.Signals
         ) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-stop-"))
    (work / "tmp").mkdir()
    flags = {c.flag: "true" if c.marker == "neon_drill" else "false" for c in CHECKS}
    env = {**os.environ, **flags, "TMPDIR": str(work / "tmp")}
    out = work / "gate.out"
    try:
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from opsgate.cli import main; raise SystemExit(main())",
                 "gate", "--env-file", str(env_file), "-q", "-p", "no:cacheprovider"],
                cwd=work, env=env, stdout=sink, stderr=subprocess.STDOUT)
        program = "pg_dump" if phase == "dump" else "pg_restore"
        t0 = time.monotonic()
        try:
            wait_for(f"{program} running", lambda: [
                p for p, n in descendants(proc.pid).items() if n == program], proc,
                timeout=900, out=out)
            seen = time.monotonic() - t0
            time.sleep(after)
            still = any(n == program for n in descendants(proc.pid).values())
            clusters = _cluster_folders(proc.pid)
            stopped = stop(proc, sig, timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        time.sleep(1.0)
        left = stopped.children_left()
        tmp_left = sorted(p.name for p in (work / "tmp").iterdir())
        return {"phase": phase, "signal": sig.name, "phase_seen_after_s": round(seen, 1),
                "signalled_after_phase_s": after, "phase_still_running": still,
                "exit_code": stopped.exit_code, "exit_s": round(stopped.seconds, 2),
                "within_grace": stopped.seconds < GRACE_S,
                "children_at_signal": sorted(set(stopped.children.values())),
                "left_running": sorted(set(left.values())),
                "dump_folders_left": [n for n in tmp_left if n.startswith(DUMP_FOLDER_PREFIX)],
                "temporary_files_left": tmp_left, "backends_left": _backends(url),
                "local_clusters_at_signal": len(clusters),
                "local_clusters_left": [str(c) for c in clusters if c.exists()],
                "load1": round(os.getloadavg()[0], 2),
                "output_tail": out.read_text(errors="replace")[-600:]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sandbox-env", type=Path, required=True, metavar="PATH")
    p.add_argument("--phase", choices=("dump", "restore"), default="dump")
    p.add_argument("--after", type=float, default=5.0, metavar="S")
    p.add_argument("--signal", choices=("TERM", "INT"), default="TERM")
    p.add_argument("--reps", type=int, default=1)
    args = p.parse_args()
    env_file = args.sandbox_env.resolve()
    url = envfile.read(env_file, str(env_file)).values({})["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        scale = conn.execute("SELECT count(*) FROM kb_entities").fetchone()[0]  # type: ignore[index]
    sig = signal.Signals[f"SIG{args.signal}"]
    runs = []
    for _ in range(args.reps):
        runs.append(once(env_file, url, args.phase, args.after, sig))
        print(json.dumps(runs[-1]), flush=True)
    meta = machine_meta()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stamp}-{scale}-stop.json").write_text(
        json.dumps({"meta": meta, "scale": scale, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
