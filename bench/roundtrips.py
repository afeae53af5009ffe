"""Round trips: what each check waits for when the target is far away.

    python -m bench.roundtrips [--delay-ms 0 --delay-ms 50] [--only preflight] [--label L]

Builds a Neon-shaped sandbox (``--sandbox-profile neon``: TLS-only PostgreSQL, pooled
endpoint through PgBouncer, direct endpoint, reference app, blob and Vercel APIs), puts
a delaying proxy (`bench.delayproxy`) in front of every one of its endpoints, writes
the sandbox's settings with every URL pointing at the proxies, and runs each check in a
pytest process of its own against them, then all of them in one run (and all but the
drill), then the commands an operator would run instead, on the direct endpoint:
``psql -c 'SELECT 1'`` (the price of one connection and one statement), ``pg_dump
--format=directory --jobs=2`` as the drill runs it, and ``pg_restore --jobs=2`` of that
dump into a database of its own (created and dropped around it).

Per run: round trips waited out (definition in `bench.delayproxy`), connections opened
and bytes each way, summed over every endpoint, plus wall time. Nothing here is a test;
nothing is asserted. Writes bench/results/<date>-roundtrips-<label>.json and
bench/results/latest-roundtrips.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.delayproxy import Counts, ProxySet
from opsgate.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

#: Check markers measured one by one (change control reads git, not the target).
CHECKS = ("preflight", "parity", "ledger", "health", "knowledge_drift", "blob_fallback",
          "deployment", "neon_drill")
ALL = "all checks"
ALL_BUT_DRILL = "all checks but the drill"
PG_DUMP = "pg_dump --jobs=2"
PG_RESTORE = "pg_restore --jobs=2"
PSQL_ONE = "psql -c 'SELECT 1'"

#: The endpoints and the variable whose URL names each.
ENDPOINTS = {"pooled": "DATABASE_URL", "direct": "DATABASE_URL_UNPOOLED",
             "app": "OPS_BASE_URL", "blob": "VERCEL_BLOB_API_URL", "vercel": "VERCEL_API_URL"}

#: The issue's targets.
TARGET_CHECK_RT = 15
TARGET_ALL_RT = 250
TARGET_DRILL_RATIO = 1.25
TARGET_UP_SHARE = 0.10


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, "a URL with host:port"
    return parts.hostname, parts.port


def _rewrite(values: dict[str, str], proxies: ProxySet) -> dict[str, str]:
    """Every ``127.0.0.1:PORT`` of an endpoint, in every value, now the proxy's port."""
    ports = {_address(values[var])[1]: proxies.port(name) for name, var in ENDPOINTS.items()}

    def swap(text: str) -> str:
        return re.sub(r"127\.0\.0\.1:(\d+)",
                      lambda m: f"127.0.0.1:{ports.get(int(m.group(1)), int(m.group(1)))}",
                      text)

    out = {k: swap(v) for k, v in values.items()}
    out["PGPORT"] = str(proxies.port("pooled"))
    return out


def _alias_proxied_app(sandbox: Sandbox, app_host: str) -> None:
    """The deployment check wants OPS_BASE_URL's host among production's aliases: add
    the proxied address beside the real one (the sandbox's Vercel API runs in this
    process)."""
    assert sandbox.vercel is not None
    project = sandbox.vercel.project
    for deployment in project.deployments:
        if deployment.get("alias"):
            deployment["alias"] = [*deployment["alias"], app_host]


def _write_env(path: Path, values: dict[str, str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.writelines(f'{k}="{v}"\n' for k, v in values.items())


def _measured(proxies: ProxySet, cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    before = proxies.snapshot()
    seen = {n: len(c) for n, c in proxies.connections_closed().items()}
    t = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False, timeout=1800)
    wall = time.monotonic() - t
    proxies.settle()
    after = proxies.snapshot()
    per = {name: after[name].minus(before[name]) for name in after}
    total = Counts()
    for counts in per.values():
        total = total.plus(counts)
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    # Each connection of the run, in the order it opened: which ones cost the most.
    conns = [(opened, closed, name, counts)
             for name, closed_list in proxies.connections_closed().items()
             for opened, closed, counts in closed_list[seen[name]:]]
    conns.sort(key=lambda c: c[0])
    start = conns[0][0] if conns else 0.0
    return {"wall_s": round(wall, 2), "exit": proc.returncode, "outcome": tail[:200],
            **vars(total), "by_endpoint": {n: vars(c) for n, c in per.items() if c.connections},
            "connections_in_order": [
                {"endpoint": name, "opened_s": round(opened - start, 3),
                 "open_s": round(closed - opened, 3), "round_trips": c.round_trips,
                 "bytes_up": c.bytes_up, "bytes_down": c.bytes_down}
                for opened, closed, name, c in conns]}


def _clean_env() -> dict[str, str]:
    """This process's environment without any target variable of the caller's."""
    drop = ("DATABASE_URL", "POSTGRES_URL", "PG", "OPS_", "RUN_OPS_", "VERCEL", "BLOB_",
            "ADMIN_", "OPSGATE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def measure_delay(sandbox: Sandbox, delay_ms: float, only: tuple[str, ...], work: Path
                  ) -> dict[str, Any]:
    values = sandbox.environ()
    upstreams = {name: _address(values[var]) for name, var in ENDPOINTS.items()}
    with ProxySet(upstreams, delay_s=delay_ms / 1000) as proxies:
        env_values = _rewrite(values, proxies)
        _alias_proxied_app(sandbox, f"127.0.0.1:{proxies.port('app')}")
        env_file = work / f"target-{int(delay_ms)}.env"
        _write_env(env_file, env_values)
        reports = work / "reports"
        base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                f"--env-file={env_file}", f"--reports-dir={reports}"]
        env = _clean_env()
        runs: dict[str, Any] = {}
        for marker in only:
            runs[marker] = _measured(proxies, [*base, "-m", marker], env)
            print(f"  {delay_ms:g} ms {marker}: {_line(runs[marker])}", file=sys.stderr)
        together = {ALL: only, ALL_BUT_DRILL: tuple(m for m in only if m != "neon_drill")}
        for name, markers in together.items():
            if len(markers) > 1 and (name == ALL or len(markers) < len(only)):
                runs[name] = _measured(proxies, [*base, "-m", " or ".join(markers)], env)
                print(f"  {delay_ms:g} ms {name}: {_line(runs[name])}", file=sys.stderr)
        for name, run in _pg_tools(proxies, env_values, env, work).items():
            runs[name] = run
            print(f"  {delay_ms:g} ms {name}: {_line(run)}", file=sys.stderr)
        shutil.rmtree(reports, ignore_errors=True)
        env_file.unlink()
    return runs


def _pg_tools(proxies: ProxySet, values: dict[str, str], env: dict[str, str], work: Path
              ) -> dict[str, dict[str, Any]]:
    """The drill's baselines on the direct URL (the password through PGPASSWORD, as the
    drill passes it): pg_dump alone, as the drill runs it; pg_restore of that dump into
    a database of its own; and psql running one statement, the price of a connection."""
    params = conninfo_to_dict(values["DATABASE_URL_UNPOOLED"])
    password = str(params.pop("password", "") or "")
    dsn = make_conninfo("", **params)
    tool_env = {**env, "PGPASSWORD": password}
    bindir = Path(values["OPSGATE_PG_BINDIR"])
    out = work / "dump"
    scratch = "opsgate_bench_restore"
    runs: dict[str, dict[str, Any]] = {}
    try:
        runs[PSQL_ONE] = _measured(proxies, [str(bindir / "psql"), "--no-psqlrc", "-qAt",
                                             "-d", dsn, "-c", "SELECT 1"], tool_env)
        runs[PG_DUMP] = _measured(proxies, [str(bindir / "pg_dump"), "--format=directory",
                                            "--jobs=2", "--compress=0", "--no-owner",
                                            "--no-privileges", "-f", str(out), "-d", dsn],
                                  tool_env)
        with psycopg.connect(values["DATABASE_URL_UNPOOLED"], autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
        try:
            target = make_conninfo(dsn, dbname=scratch)
            runs[PG_RESTORE] = _measured(proxies, [
                str(bindir / "pg_restore"), "--jobs=2", "--no-owner", "--no-privileges",
                "--exit-on-error", "-d", target, str(out)], tool_env)
        finally:
            with psycopg.connect(values["DATABASE_URL_UNPOOLED"], autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(scratch)))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return runs


def _line(run: dict[str, Any]) -> str:
    return (f"{run['round_trips']} round trips, {run['connections']} connections, "
            f"{run['bytes_up']} B up, {run['bytes_down']} B down, {run['wall_s']} s, "
            f"exit {run['exit']}")


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f}"


def _target(name: str, runs: dict[str, Any]) -> str:
    """The issue's target for a run, and whether this run met it."""
    rt = runs[name]["round_trips"]
    if name in (PG_DUMP, PG_RESTORE, PSQL_ONE):
        return "baseline"
    if name == "neon_drill" and PG_DUMP in runs:
        dump = runs[PG_DUMP]["round_trips"]
        verdict = (f"{rt / dump:.2f}x pg_dump (<= {TARGET_DRILL_RATIO}x): "
                   f"{'met' if rt <= TARGET_DRILL_RATIO * dump else 'missed'}")
        if PG_RESTORE in runs:
            both = dump + runs[PG_RESTORE]["round_trips"]
            verdict += f"; {rt / both:.2f}x pg_dump + pg_restore"
        return verdict
    limit = TARGET_ALL_RT if name in (ALL, ALL_BUT_DRILL) else TARGET_CHECK_RT
    return f"<= {limit}: {'met' if rt <= limit else 'missed'}"


def markdown(result: dict[str, Any]) -> str:
    """Round trips and wall time at every delay; connections and bytes (which do not
    depend on the delay) at the largest one, whose counts also judge the targets."""
    delays = list(result["delays"])
    last = result["delays"][delays[-1]]
    lines = [f"# Round trips ({result['label']}, {result['date']})", "",
             "Per run, summed over every endpoint and connection: round trips waited out "
             "(a server burst after a client burst, per connection), connections opened, "
             "KiB sent (up) and received (down). `python -m bench.roundtrips`.", ""]
    head = "| run |" + "".join(f" round trips at {d} ms |" for d in delays)
    head += " connections | KiB up | KiB down | up/down |"
    head += "".join(f" wall at {d} ms |" for d in delays) + f" target (at {delays[-1]} ms) |"
    lines += [head, "|---" * (6 + 2 * len(delays)) + "|"]
    for name, run in last.items():
        share = run["bytes_up"] / run["bytes_down"] if run["bytes_down"] else 0.0
        row = f"| {name} |" + "".join(
            f" {result['delays'][d].get(name, {}).get('round_trips', '')} |" for d in delays)
        row += (f" {run['connections']} | {_kib(run['bytes_up'])} | "
                f"{_kib(run['bytes_down'])} | {share:.0%} |")
        row += "".join(f" {result['delays'][d].get(name, {}).get('wall_s', '')} s |"
                       for d in delays)
        lines.append(row + f" {_target(name, last)} |")
    failed = [f"{n} at {d} ms (exit {r['exit']}: {r['outcome']})" for d in delays
              for n, r in result["delays"][d].items() if r["exit"] != 0]
    if failed:
        lines += ["", "Runs that did not pass: " + "; ".join(failed) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.roundtrips")
    parser.add_argument("--delay-ms", type=float, action="append",
                        help="added round-trip delay (repeatable; default 0 and 50)")
    parser.add_argument("--only", action="append", choices=CHECKS,
                        help="measure these checks only (repeatable)")
    parser.add_argument("--label", default="current tree", help="names this run in the table")
    args = parser.parse_args(argv)
    delays = args.delay_ms or [0.0, 50.0]
    only = tuple(args.only or CHECKS)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = Path(tempfile.mkdtemp(prefix="opsgate-roundtrips-"))
    print("bench.roundtrips: building a neon-profile sandbox...", file=sys.stderr)
    try:
        with Sandbox.start(profile="neon") as sandbox:
            result: dict[str, Any] = {
                "label": args.label, "date": stamp, "machine": platform.platform(),
                "python": platform.python_version(), "definition": (
                    "round trip: the server starts sending after the client sent since "
                    "the server last sent, counted per connection"),
                "delays": {f"{d:g}": measure_delay(sandbox, d, only, work) for d in delays},
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", args.label.lower()).strip("-")
    (RESULTS / f"{stamp}-roundtrips-{slug}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (RESULTS / "latest-roundtrips.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
