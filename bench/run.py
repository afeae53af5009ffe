"""Benchmarks at scale: opsgate against the baselines a user would otherwise run.

    python -m bench.run --scale 100000 [--scale 1000000] [--reps 3] [--only hash]
    python -m bench.run --sandbox-env PATH [--only drill]

Needs the ``bench`` extra (``pip install -e '.[bench]'``: psutil, for the process tree's
memory). ``--only NAME`` (repeatable: hash, drill, drift, parity) measures some tasks only.
``--sandbox-env PATH`` measures a sandbox that is already up (``opsgate sandbox up
--scale N --env-file PATH``) instead of building one: a 1M-entity target takes about
16 minutes to build, and one can then be measured several times.

Builds a sandbox target per scale (seeded generator: about 4 edges and 3 tags per
entity) on the embedded PostgreSQL, then measures each task in its own process, taking
wall time and the process tree's peak RSS from wait4(2). Writes
bench/results/<date>-<scale>.json and bench/results/latest.md. Nothing here is a test:
no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from opsgate.sandbox import Sandbox
from opsgate.verify import canon

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def vm_hwm_kib(pid: int) -> int:
    """One process's VmHWM (kB), 0 once it is gone: every bench reads memory this way."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")), 0)
    except OSError:
        return 0


def machine_meta() -> dict[str, str]:
    """The date and machine every result file of the benches records."""
    return {"date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python "
                       f"{platform.python_version()}"}


@dataclass
class TreePeak:
    """Peaks of a process tree in kB (`tree_peak`): the largest sum of VmHWM over the
    tree at one sample, and each program's own largest VmHWM (one process of it).

    VmHWM, not wait4's ru_maxrss: Linux carries the parent's high-water mark into a child
    across exec, so every child of this (large) runner would report the runner's size.
    VmHWM belongs to the new address space and is not inherited.
    """

    tree_kib: int = 0
    by_program: dict[str, int] = field(default_factory=dict)

    def sample(self, pid: int) -> None:
        import psutil

        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in procs:
            try:
                name, hwm = proc.name(), vm_hwm_kib(proc.pid)
            except psutil.Error:
                continue
            total += hwm
            self.by_program[name] = max(self.by_program.get(name, 0), hwm)
        self.tree_kib = max(self.tree_kib, total)


@contextlib.contextmanager
def tree_peak(pid: int) -> Iterator[TreePeak]:
    """`TreePeak` of ``pid``'s process tree, sampled every 20 ms while the block runs
    (final once the block has ended): the one sampler of every bench."""
    peak = TreePeak()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.sample(pid)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, name="bench-peak", daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def measure(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
            ) -> dict[str, Any]:
    """Run ``cmd``; wall seconds, peak RSS (MiB) of its process tree (sampled every
    20 ms, and the task's own VmHWM at exit where it reports it), parsed output."""
    load = os.getloadavg()[0]
    t = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                            env=env or os.environ.copy())
    with tree_peak(proc.pid) as peak:
        out, err = proc.communicate()
        wall = time.monotonic() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {err.decode()[-800:]}")
    last = out.decode().strip().splitlines()[-1] if out.strip() else "{}"
    try:
        parsed = json.loads(last)
    except json.JSONDecodeError:
        parsed = {"stdout": last[:200]}
    rss_kib = max(peak.tree_kib, int(parsed.get("vm_hwm_kib", 0)) if isinstance(parsed, dict) else 0)
    return {"wall_s": wall, "rss_mib": rss_kib / 1024, "out": parsed, "load1": load}


def task(name: str, args: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """A bench task command and its environment: URLs travel in BENCH_URL, BENCH_URL_B
    and BENCH_API_URL."""
    env = dict(os.environ)
    for key, var in (("url", "BENCH_URL"), ("a", "BENCH_URL"), ("b", "BENCH_URL_B"),
                     ("api", "BENCH_API_URL")):
        if key in args:
            env[var] = str(args.pop(key))
    return [sys.executable, "-m", "bench.tasks", name, json.dumps(args)], env


def shell(script: str, env: dict[str, str]) -> list[str]:
    return ["bash", "-o", "pipefail", "-c", script]


def reps(label: str, make: Any, n: int) -> dict[str, Any]:
    return _summary(label, [measure(*make()) for _ in range(n)])


def _summary(label: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [r["wall_s"] for r in runs]
    return {"label": label, "median_s": statistics.median(walls), "min_s": min(walls),
            "max_s": max(walls), "rss_mib": max(r["rss_mib"] for r in runs),
            "last": runs[-1]["out"], "reps": len(runs), "walls_s": walls,
            "load1": [round(r["load1"], 2) for r in runs]}


def side_by_side(tools: list[tuple[str, Any]], n: int) -> list[dict[str, Any]]:
    """Each tool ``n`` times, taking turns (A B C A B C ...): on a shared machine a
    change in load then hits every tool alike, and the ratios stay fair."""
    runs: list[list[dict[str, Any]]] = [[] for _ in tools]
    for _ in range(n):
        for i, (_label, make) in enumerate(tools):
            runs[i].append(measure(*make()))
    return [_summary(label, r) for (label, _), r in zip(tools, runs, strict=True)]


TASK_NAMES = ("hash", "drill", "drift", "parity")


class _Running:
    """A sandbox that is already up, read from the settings file it wrote."""

    def __init__(self, env_file: Path) -> None:
        from opsgate import envfile

        self.env = envfile.read(env_file, str(env_file)).values({})
        payload = self.env.get("OPSGATE_LEGACY_PAYLOAD_FILE")
        self.payload_file = Path(payload) if payload else None

    def environ(self) -> dict[str, str]:
        return dict(self.env)

    def stop(self) -> None:
        """Not ours: whoever started it stops it."""


def bench_scale(scale: int | None, n: int, only: frozenset[str] = frozenset(TASK_NAMES),
                sandbox_env: Path | None = None) -> dict[str, Any]:
    t = time.monotonic()
    sb: Sandbox | _Running = (_Running(sandbox_env) if sandbox_env is not None
                              else Sandbox.start(scale=scale))
    build_s = time.monotonic() - t if sandbox_env is None else 0.0
    try:
        env = sb.environ()
        url = env["DATABASE_URL"]
        bindir = env["OPSGATE_PG_BINDIR"]
        psql = str(Path(bindir) / "psql")
        password = psycopg.conninfo.conninfo_to_dict(url).get("password") or ""
        with psycopg.connect(url, autocommit=True) as conn:
            counts = {tb: conn.execute(f"SELECT count(*) FROM {tb}").fetchone()[0]  # type: ignore[index]
                      for tb in ("kb_entities", "kb_edges", "kb_entity_tags")}
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
            cols, order = canon.table_shape(conn, "kb_entities")
        scale = counts["kb_entities"]
        query = canon.table_copy_query("kb_entities", cols, order).as_string()
        sets = " ".join(f"-c {shlex.quote(f'SET {k} = {chr(39)}{v}{chr(39)}')}"
                        for k, v in canon.TABLE_SESSION_SETTINGS)
        pg_env = {**os.environ, "PGPASSWORD": str(password)}
        dsn = url.replace(f":{password}@", "@")
        out: dict[str, Any] = {"scale": scale, "build_s": round(build_s, 1), "counts": counts,
                               "database_bytes": size, "comparisons": []}

        if "hash" in only:
            _hash(out, url, psql, dsn, query, sets, pg_env, n)
        if "drill" in only:
            _drill(out, url, bindir, psql, dsn, sets, pg_env, n)
        if "drift" in only and sb.payload_file is not None:
            _drift(out, url, sb.payload_file, scale, n)
        if "parity" in only:
            _parity(out, url, env["OPS_BASE_URL"], n)
        return out
    finally:
        sb.stop()


def _drift(out: dict[str, Any], url: str, payload: Path, scale: int, n: int) -> None:
    """Knowledge drift (payload from the file, and from the database up to 200k entities:
    a jsonb value holds at most 255 MB) against parsing the payload and COPYing the kb."""
    tools: list[tuple[str, Any]] = [
        ("opsgate knowledge drift", lambda: task("opsgate_drift", {
            "url": url, "payload": str(payload)})),
        ("parse payload + COPY kb tables", lambda: task("parse_and_copy", {
            "url": url, "payload": str(payload)})),
    ]
    if scale <= 200_000:
        # A scaled sandbox keeps the fixture in admin_content_state (its migrations read
        # the file): put the scaled payload there too, for the database variant.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE admin_content_state SET payload = %s::jsonb "
                         "WHERE key = 'constellation'", (payload.read_text(),))
        tools.append(("opsgate knowledge drift, payload from the database",
                      lambda: task("opsgate_drift_db", {"url": url})))
    ours, base, *from_db = side_by_side(tools, n)
    out["comparisons"].append({"what": "knowledge drift", "ours": ours, "baselines": [base],
                               "target_ratio": 1.5})
    if from_db:
        out["comparisons"].append({"what": "knowledge drift (payload in the database)",
                                   "ours": from_db[0], "baselines": [base],
                                   "target_ratio": 1.5})


def _parity(out: dict[str, Any], url: str, api: str, n: int) -> None:
    """The checks' parity engine against what a user would run by hand: one fetch, one
    parse, the counts in SQL (no validation, no id comparison)."""
    ours, base = side_by_side([
        ("opsgate parity (the checks' engine)",
         lambda: task("opsgate_parity", {"url": url, "api": api})),
        ("httpx GET + json.loads + counts in SQL",
         lambda: task("fetch_parse_count", {"url": url, "api": api})),
    ], n)
    out["comparisons"].append({"what": "post-deploy parity", "ours": ours,
                               "baselines": [base], "target_ratio": 1.5})


def _hash(out: dict[str, Any], url: str, psql: str, dsn: str, query: str, sets: str,
          pg_env: dict[str, str], n: int) -> None:
    """opsgate's canon-v1 hash of kb_entities against psql and bare psycopg."""
    ours, by_psql, by_psycopg = side_by_side([
        ("opsgate canon-v1 table hash",
         lambda: task("opsgate_hash", {"url": url, "table": "kb_entities"})),
        ("psql COPY \\| sha256sum", lambda: (shell(
            f"{shlex.quote(psql)} -X -q -d {shlex.quote(dsn)} {sets} "
            f"-c {shlex.quote(query)} | sha256sum", pg_env), pg_env)),
        ("psycopg COPY into hashlib", lambda: task("psycopg_copy_hash", {
            "url": url, "query": query, "settings": list(canon.TABLE_SESSION_SETTINGS)})),
    ], n)
    out["comparisons"].append({"what": "hash kb_entities", "ours": ours,
                               "baselines": [by_psql, by_psycopg], "target_ratio": 1.05})


#: The tables the hand-run drill hashes on both sides (the contract tables).
HAND_TABLES = ["admin_content_state", "admin_history", "admin_migrations", "kb_entities",
               "kb_entity_tags", "kb_edges", "kb_media_objects", "kb_media_derivatives",
               "kb_workflows", "kb_workflow_steps", "kb_provenance_runs", "kb_entity_sources"]


def _drill(out: dict[str, Any], url: str, bindir: str, psql: str, dsn: str, sets: str,
           pg_env: dict[str, str], n: int) -> None:
    """opsgate's drill against what an operator would type by hand."""

    def hand_drill() -> tuple[list[str], dict[str, str]]:
        work = tempfile.mkdtemp(prefix="bench-drill-")
        db = f"bench_hand_{int(time.time() * 1000)}"
        rdsn = dsn.rsplit("/", 1)[0] + "/" + db
        hashes = []
        for tb in HAND_TABLES:
            for target in (dsn, rdsn):
                hashes.append(f"{shlex.quote(psql)} -X -q -d {shlex.quote(target)} {sets} "
                              f"-c {shlex.quote(f'COPY (SELECT * FROM {tb} ORDER BY 1) TO STDOUT')}"
                              " | sha256sum >/dev/null")
        script = " && ".join([
            f"{shlex.quote(str(Path(bindir) / 'pg_dump'))} -Fc -f {work}/a.dump -d {shlex.quote(dsn)}",
            f"{shlex.quote(psql)} -X -q -d {shlex.quote(dsn)} -c 'CREATE DATABASE {db}'",
            f"{shlex.quote(str(Path(bindir) / 'pg_restore'))} -j2 --no-owner -d {shlex.quote(rdsn)} {work}/a.dump",
            *hashes,
            f"{shlex.quote(psql)} -X -q -d {shlex.quote(dsn)} -c 'DROP DATABASE {db}'",
            f"rm -rf {work}",
        ])
        return shell(script, pg_env), pg_env

    ours, hand = side_by_side([
        ("opsgate drill", lambda: task("opsgate_drill", {"url": url, "bindir": bindir})),
        ("pg_dump -Fc, pg_restore -j2, psql-hash every table", hand_drill),
    ], n)
    out["comparisons"].append({"what": "backup/restore drill", "ours": ours,
                               "baselines": [hand], "target_ratio": 0.7})


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# Benchmark results ({meta['date']})", "",
             f"Machine: {meta['machine']}; PostgreSQL {meta['postgres']}; "
             f"{meta['reps']} repetitions, median (min–max) wall seconds; peak RSS of the "
             "client process tree.", ""]
    for r in results:
        lines += [f"## {r['scale']:,} entities", "",
                  f"Target: {r['counts']['kb_entities']:,} entities, "
                  f"{r['counts']['kb_edges']:,} edges, {r['counts']['kb_entity_tags']:,} tags, "
                  f"database {r['database_bytes'] / 2**20:,.0f} MiB; "
                  + (f"built in {r['build_s']} s." if r["build_s"]
                     else "a sandbox already up (--sandbox-env)."),
                  "", "| task | tool | median s | min–max s | client RSS MiB | ratio to baseline | target | load average (1 min) at the runs' starts |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in r["comparisons"]:
            base = c["baselines"][0]
            ratio = c["ours"]["median_s"] / base["median_s"]
            verdict = "met" if ratio <= c["target_ratio"] else "missed"
            for row in [c["ours"], *c["baselines"]]:
                is_ours = row is c["ours"]
                loads = row.get("load1")
                lines.append(
                    f"| {c['what'] if is_ours else ''} | {row['label']} | {row['median_s']:.2f} | "
                    f"{row['min_s']:.2f}–{row['max_s']:.2f} | {row['rss_mib']:.0f} | "
                    + (f"{ratio:.2f}x vs first baseline | <= {c['target_ratio']}x: {verdict} |"
                       if is_ours else " | |")
                    + (f" {min(loads):.1f}–{max(loads):.1f} |" if loads else " |"))
        lines.append("")
    return "\n".join(lines) + "\n"


def compile_bytecode() -> None:
    """Compile opsgate's and the tasks' modules to bytecode before measuring, as
    installing a wheel does: in an editable checkout run with PYTHONDONTWRITEBYTECODE
    (as some shells and CI images set), every task process would otherwise compile
    them from source, about 15 ms that no installed opsgate pays. Python reads the
    ``__pycache__`` files whatever that variable says; git ignores them."""
    import compileall

    for package in ("opsgate", "bench"):
        compileall.compile_dir(ROOT / package, quiet=1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=int, action="append", default=[])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--only", action="append", choices=TASK_NAMES, default=[],
                   help="measure only this task (repeatable; default: all)")
    p.add_argument("--sandbox-env", type=Path, default=None, metavar="PATH",
                   help="measure the running sandbox whose settings file this is")
    args = p.parse_args()
    if bool(args.scale) == (args.sandbox_env is not None):
        p.error("give --scale (build a sandbox) or --sandbox-env (use a running one)")
    only = frozenset(args.only or TASK_NAMES)
    RESULTS.mkdir(parents=True, exist_ok=True)
    compile_bytecode()
    results = ([bench_scale(None, args.reps, only, args.sandbox_env)]
               if args.sandbox_env is not None
               else [bench_scale(s, args.reps, only) for s in args.scale])
    meta = {**machine_meta(), "postgres": "embedded", "reps": args.reps}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    # A run of some comparisons leaves the full run's latest.md as it was.
    tag = "-" + "-".join(sorted(only)) if only else ""
    for r in results:
        (RESULTS / f"{stamp}-{r['scale']}{tag}.json").write_text(
            json.dumps({"meta": meta, **r}, indent=2))
    latest = RESULTS / f"latest{tag}.md"
    latest.write_text(markdown(results, meta))
    print(latest.read_text())


if __name__ == "__main__":
    main()
