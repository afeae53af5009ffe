"""The whole gate, every check on, against a sandbox already up (at 1M entities, say).

    python -m bench.gate_scale --sandbox-env PATH [--alone] [--label L]

Runs ``opsgate gate --env-file PATH`` with every ``RUN_OPS_*`` flag true (the change
control check reads this repository's last commit, ``HEAD~1..HEAD``, unless
``OPSGATE_CHANGE_RANGE`` is set), with default settings otherwise, in a temporary folder
(its reports are read, then deleted). Records the verdict, each check's status and
time (its tests' setup, call and teardown, from the run's summary.json), the run's wall
time and the client's peak memory: the summed VmHWM of the gate's process tree (pytest,
drift's second process, pg_dump, psql, pg_restore and the drill's own PostgreSQL, which
is the gate's child too), sampled every 20 ms, so processes that never ran at the same
time are summed as if they had, an upper bound. With ``--alone`` each check then runs
alone too (its flag on, every other off), for its own time and peak memory.

Writes bench/results/<date>-<scale>-gate[-L].json and bench/results/latest-gate.md.
Nothing here is a test: no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.run import ROOT, machine_meta, tree_peak
from opsgate import envfile
from opsgate.gate import CHECKS

RESULTS = ROOT / "bench" / "results"


def _flags(only: str | None) -> dict[str, str]:
    return {c.flag: "true" if only in (None, c.marker) else "false" for c in CHECKS}


def gate_run(env_file: Path, only: str | None) -> dict[str, Any]:
    """One ``opsgate gate`` run: its measure (wall, tree RSS), verdict and checks."""
    env = {**os.environ, **_flags(only), "OPSGATE_CHANGE_REPO": str(ROOT)}
    env.setdefault("OPSGATE_CHANGE_RANGE", "HEAD~1..HEAD")
    with tempfile.TemporaryDirectory(prefix="bench-gate-") as cwd:
        cmd = [sys.executable, "-c", "from opsgate.cli import main; raise SystemExit(main())",
               "gate", "--env-file", str(env_file), "-q", "-p", "no:cacheprovider"]
        m = measure_in(cmd, env, Path(cwd))
        summaries = sorted(Path(cwd).glob("reports/runs/*/summary.json"))
        if not summaries:
            return {"only": only, **m, "verdict": "no summary"}
        s = json.loads(summaries[-1].read_text())
    checks = [{"marker": c["marker"], "status": c["status"], "duration_s": c["duration_s"],
               "tests": len(c["tests"]),
               "failed": [f"{t['nodeid']}: {str(t.get('message'))[:400]}" for t in c["tests"]
                          if t["outcome"] not in ("passed",)]}
              for c in s["checks"] if c["status"] != "not run"]
    return {"only": only, **m, "verdict": s["verdict"], "duration_s": s["duration_s"],
            "counts": s["counts"], "notes": s["notes"], "checks": checks}


def measure_in(cmd: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run the gate in ``cwd`` (where it writes its reports): wall time, the tree's summed
    peak (as bench.run measures), and each program's own largest peak (VmHWM of one
    process), sampled every 20 ms."""
    load = os.getloadavg()[0]
    t = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd,
                            env=env)
    with tree_peak(proc.pid) as peak:
        out, _ = proc.communicate()
        wall = time.monotonic() - t
    tree_peak_kib, by_program = peak.tree_kib, peak.by_program
    return {"exit": proc.returncode, "wall_s": round(wall, 2),
            "tree_rss_mib": round(tree_peak_kib / 1024, 1),
            "peak_rss_mib_by_program": {k: round(v / 1024, 1) for k, v in
                                        sorted(by_program.items(), key=lambda kv: -kv[1])},
            "load1": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
            "output_tail": out.decode(errors="replace")[-1500:] if proc.returncode else ""}


def _target(env_file: Path) -> dict[str, Any]:
    url = envfile.read(env_file, str(env_file)).values({})["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        n = conn.execute("SELECT count(*) FROM kb_entities").fetchone()[0]  # type: ignore[index]
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
    return {"scale": n, "database_bytes": size}


def markdown(out: dict[str, Any]) -> str:
    lines = [f"# The gate at {out['scale']:,} entities ({out['meta']['date']})", "",
             f"Machine: {out['meta']['machine']}. Every check on, default settings; RSS: "
             "peak of the gate's process tree (summed VmHWM), and each program's largest "
             "single process.", ""]
    for r in out["runs"]:
        what = "every check" if r["only"] is None else f"{r['only']} alone"
        progs = ", ".join(f"{k} {v:.0f}" for k, v in
                          list(r.get("peak_rss_mib_by_program", {}).items())[:4])
        lines.append(f"- {what}: {r['verdict']}, {r.get('wall_s', 0):.1f} s wall, tree "
                     f"{r.get('tree_rss_mib', 0):.0f} MiB (largest single processes, MiB: "
                     f"{progs}), load {r.get('load1', 0):.2f} -> {r.get('load_after', 0):.2f}")
        for c in r.get("checks", []):
            lines.append(f"  - {c['marker']}: {c['status']} in {c['duration_s']:.1f} s"
                         + (f"; {'; '.join(c['failed'])}" if c["failed"] else ""))
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sandbox-env", type=Path, required=True, metavar="PATH")
    p.add_argument("--alone", action="store_true", help="then each check alone")
    p.add_argument("--label", default="")
    args = p.parse_args()
    env_file = args.sandbox_env.resolve()
    target = _target(env_file)
    runs = [gate_run(env_file, None)]
    print(json.dumps(runs[-1]), flush=True)
    if args.alone:
        for c in CHECKS:
            runs.append(gate_run(env_file, c.marker))
            print(json.dumps(runs[-1]), flush=True)
    meta = machine_meta()
    out = {"meta": meta, **target, "runs": runs}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    tag = f"-{args.label}" if args.label else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stamp}-{target['scale']}-gate{tag}.json").write_text(json.dumps(out, indent=2))
    (RESULTS / "latest-gate.md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
