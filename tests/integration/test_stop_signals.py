"""A stopped gate run stops fast and leaves nothing behind.

The gate runs as CI runs it, a real ``python -m pytest`` process, on a sandbox started
here and grown to a size that keeps the drill busy for seconds. It is stopped with
SIGINT or SIGTERM (to its pid alone, as CI and ``timeout`` send them) when a phase is
seen under way: pg_dump running below it, pg_restore running below it, psql reading
the restored copy (a row in pg_stat_activity). Afterwards: exit code 2 within GitHub's
7.5 s grace, no process it ran left alive, no scratch database and no backend of its
client programs on the server, no dump folder, and in the default local mode the local
copy's server stopped and its folder gone (SIGKILL: by its watchdog).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from opsgate.sandbox import Sandbox
from opsgate.verify.drill import DUMP_FOLDER_PREFIX, SCRATCH_PREFIX
from tests.gate_helpers import ROOT, clean_env
from tests.stop_helpers import (
    Stopped,
    alive,
    assert_stopped_in_time,
    descendants,
    reaped,
    stop,
    wait_for,
)

#: Rows added to kb_entities: the drill then runs a few seconds, each phase long enough
#: to be stopped in (a scaled sandbox would take a minute or more to build).
BULK_ROWS = 60_000

CLIENTS = ("pg_dump", "pg_restore", "psql")


@pytest.fixture(scope="module")
def big() -> Iterator[tuple[Sandbox, str]]:
    """The sandbox with `BULK_ROWS` more entities, and its direct URL."""
    with Sandbox.start() as sb:
        values = sb.environ()
        url = values.get("DATABASE_URL_UNPOOLED") or values["DATABASE_URL"]
        assert url
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO kb_entities (id, kind, slug, title, domain, summary, body) "
                "SELECT 'bulk-' || g, 'concept', 'bulk-' || g, 'Bulk ' || g, 'bulk', "
                "repeat('x', 200), jsonb_build_object('n', g, 'text', repeat('y', 300)) "
                "FROM generate_series(1, %s) g", (BULK_ROWS,))
            conn.execute("VACUUM ANALYZE kb_entities")
        yield sb, url


def _server_rows(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, args).fetchall()


def _scratch_databases(url: str) -> list[str]:
    return [r[0] for r in _server_rows(
        url, "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", SCRATCH_PREFIX)]


def _client_backends(url: str, within: float = 2.0) -> list[tuple[Any, ...]]:
    """Backends of pg_dump, pg_restore or psql still on the server ``within`` seconds
    on (a backend notices its client has gone when it next reads or writes)."""
    deadline = time.monotonic() + within
    while True:
        rows = _server_rows(
            url, "SELECT pid, application_name, datname FROM pg_stat_activity "
            "WHERE application_name = ANY(%s) AND pid <> pg_backend_pid()", list(CLIENTS))
        if not rows or time.monotonic() >= deadline:
            return rows
        time.sleep(0.05)


def _child(proc: subprocess.Popen[bytes], name: str) -> Any:
    return lambda: [p for p, n in descendants(proc.pid).items() if n == name]


def _hashing_the_copy(url: str) -> Any:
    return lambda: _server_rows(
        url, "SELECT pid FROM pg_stat_activity WHERE starts_with(datname, %s) "
        "AND application_name = 'psql' AND query LIKE '%%COPY%%'", SCRATCH_PREFIX)


def _hashing_the_local_copy(proc: subprocess.Popen[bytes], url: str) -> Any:
    """A psql below the drill connected to another server than the source: the local
    copy (both are on 127.0.0.1; the ports differ)."""
    source = f":{urlsplit(url).port}/"
    return lambda: [p for p in _child(proc, "psql")()
                    if "--dbname=" in _cmdline(p) and source not in _cmdline(p)]


def _local_cluster_folders(proc: subprocess.Popen[bytes]) -> list[Path]:
    """The data folders of the PostgreSQL servers running below the drill (its local
    copy's postmaster, ``postgres -D <folder>``)."""
    found = []
    for pid in _child(proc, "postgres")():
        args = _cmdline(pid).split()
        if "-D" in args[:-1]:
            found.append(Path(args[args.index("-D") + 1]))
    return found


def _drill(sb: Sandbox, tmp: Path, mode: str = "local") -> tuple[subprocess.Popen[bytes], Path]:
    """The gate's drill on ``sb`` as its own process, restoring as ``mode`` says; its
    temporary files in ``tmp``."""
    out = tmp / "gate.out"
    (tmp / "tmp").mkdir()
    env = clean_env(RUN_OPS_NEON_DRILL="true", TMPDIR=str(tmp / "tmp"),
                    OPSGATE_DRILL_RESTORE=mode)
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
             f"--env-file={sb.env_file}", f"--reports-dir={tmp / 'reports'}",
             str(ROOT / "checks" / "test_neon_drill.py")],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    return proc, out


def _assert_nothing_left(stopped: Stopped, url: str, tmp: Path, out: Path) -> None:
    assert_stopped_in_time(stopped, 2, out.read_text(errors="replace"))
    assert not stopped.children_left(), f"left running: {stopped.children_left()}"
    assert not _scratch_databases(url), f"scratch database left: {_scratch_databases(url)}"
    assert not _client_backends(url), f"backends left: {_client_backends(url)}"
    folders = list((tmp / "tmp").glob(f"{DUMP_FOLDER_PREFIX}*"))
    assert not folders, f"dump folder left: {folders}"


#: Each phase with one signal: both take the same path once they have raised (the
#: interrupt), and each run costs seconds of the suite. The local mode (the default)
#: in every phase; the scratch database on the target server in the two it adds.
@pytest.mark.parametrize(("phase", "sig", "mode"), [
    ("dump", signal.SIGINT, "local"),
    ("restore", signal.SIGTERM, "local"),
    ("hashing the copy", signal.SIGINT, "local"),
    ("restore", signal.SIGTERM, "target-scratch"),
    ("hashing the copy", signal.SIGTERM, "target-scratch")],
    ids=["dump-SIGINT-local", "restore-SIGTERM-local", "hashing the copy-SIGINT-local",
         "restore-SIGTERM-target-scratch", "hashing the copy-SIGTERM-target-scratch"])
def test_a_stopped_drill_exits_within_the_grace_and_leaves_nothing(
        big: tuple[Sandbox, str], tmp_path: Path, sig: signal.Signals, phase: str,
        mode: str) -> None:
    sb, url = big
    proc, out = _drill(sb, tmp_path, mode)
    clusters: list[Path] = []
    with reaped(proc):
        if phase == "dump":
            wait_for("pg_dump running", _child(proc, "pg_dump"), proc, out=out)
        elif phase == "restore":
            wait_for("pg_restore running", _child(proc, "pg_restore"), proc, out=out)
        elif mode == "local":
            wait_for("psql reading the local copy", _hashing_the_local_copy(proc, url), proc,
                     out=out)
        else:
            wait_for("psql reading the restored copy", _hashing_the_copy(url), proc, out=out)
        if mode == "local":
            clusters = wait_for("the local copy's server", lambda: _local_cluster_folders(proc),
                                proc, out=out)
        stopped = stop(proc, sig, out=out)
    print(f"drill ({mode}) stopped by {sig.name} during {phase}: exit {stopped.exit_code} "
          f"after {stopped.seconds:.2f} s")
    _assert_nothing_left(stopped, url, tmp_path, out)
    assert not [c for c in clusters if c.exists()], f"local copy left: {clusters}"
    _assert_reported_interrupted(tmp_path / "reports", sig)


def test_a_killed_local_drill_leaves_its_copy_to_the_watchdog(
        big: tuple[Sandbox, str], tmp_path: Path) -> None:
    """SIGKILL runs no cleanup of the drill's own: the local copy's watchdog stops the
    cluster and deletes its folder and the dump folder once the drill's process is gone."""
    sb, _ = big
    proc, out = _drill(sb, tmp_path, "local")
    with reaped(proc):
        wait_for("pg_restore running", _child(proc, "pg_restore"), proc, out=out)
        clusters = wait_for("the local copy's server", lambda: _local_cluster_folders(proc),
                            proc, out=out)
        servers = _child(proc, "postgres")()
        dumps = list((tmp_path / "tmp").glob(f"{DUMP_FOLDER_PREFIX}*"))
        assert dumps and clusters
        proc.kill()
        proc.wait()
    t = time.monotonic()
    while time.monotonic() - t < 30 and any(p.exists() for p in (*clusters, *dumps)):
        time.sleep(0.1)
    gone = round(time.monotonic() - t, 2)
    print(f"killed local drill: copy and dump folder removed {gone} s after SIGKILL")
    assert not [p for p in (*clusters, *dumps) if p.exists()], "left after SIGKILL"
    deadline = time.monotonic() + 10
    while [p for p in servers if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in servers if alive(p)], "the local copy's server still runs"


def _assert_reported_interrupted(reports: Path, sig: signal.Signals) -> None:
    """The run's reports say the drill was interrupted by ``sig``, never that it passed."""
    (run,) = (reports / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["verdict"] == "interrupted", summary["verdict"]
    assert summary["interruption"]["by"] == sig.name, summary["interruption"]
    drill = next(c for c in summary["checks"] if c["marker"] == "neon_drill")
    assert drill["status"] == "interrupted", drill
    record = (run / "drill-record.md").read_text()
    assert record.startswith(f"# Drill record: NOT verified (interrupted by {sig.name}"), \
        record[:200]
    assert "drill: pass" not in record


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def _busy_backend(proc: subprocess.Popen[bytes]) -> Any:
    """A backend of the sandbox's server running a statement (its process title names
    it): the build's migrations are under way."""
    verbs = (" INSERT", " COPY", " SELECT", " UPDATE", " CREATE", " ALTER", " DELETE")
    return lambda: [p for p, n in descendants(proc.pid).items()
                    if n == "postgres" and " app " in (c := _cmdline(p)) and
                    any(v in c for v in verbs)]


#: An odd scale, one per process: the sandbox folder holding ``constellation-<it>.json``
#: is this test's, not that of another run of it at the same time (another checkout's
#: suite on the same machine found three such folders).
SANDBOX_SCALE = 4001 + 2 * (os.getpid() % 499)


def _folders_of_the_build(proc: subprocess.Popen[bytes]) -> list[Path]:
    """The build's sandbox folder (it holds the scaled payload) and its cluster's folder
    (the server's working directory is the cluster's data folder)."""
    import tempfile

    found = [d for d in Path(tempfile.gettempdir()).glob("opsgate-sandbox-*")
             if (d / f"constellation-{SANDBOX_SCALE}.json").exists()]
    for pid, name in descendants(proc.pid).items():
        if name == "postgres":
            with contextlib.suppress(OSError):
                found.append(Path(os.readlink(f"/proc/{pid}/cwd")).parent)
    return sorted(set(found))


def test_sandbox_up_stopped_while_it_builds_stops_its_query_and_removes_everything(
        tmp_path: Path) -> None:
    sig = signal.SIGTERM  # the user's case; SIGINT raises the same interrupt
    env_file = tmp_path / "sb.env"
    out = tmp_path / "sandbox.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opsgate.cli", "sandbox", "up", "--scale",
             str(SANDBOX_SCALE), f"--env-file={env_file}"], cwd=tmp_path, env=clean_env(),
            stdout=sink, stderr=subprocess.STDOUT)
    with reaped(proc):
        wait_for("a migration query of the build", _busy_backend(proc), proc, out=out)
        folders = _folders_of_the_build(proc)
        stopped = stop(proc, sig, out=out)
    said = out.read_text(errors="replace")
    print(f"sandbox build stopped by {sig.name}: exit {stopped.exit_code} after "
          f"{stopped.seconds:.2f} s")
    assert len(folders) == 2, f"the build's folders not found: {folders}"
    assert_stopped_in_time(stopped, 130, said)
    assert "stopped by" in said and " up (" not in said, said[-600:]
    assert "Traceback" not in said, said[-1500:]
    assert not stopped.children_left(), f"left running: {stopped.children_left()}"
    assert not [f for f in folders if f.exists()], f"left behind: {folders}"
    assert not env_file.exists()


#: A migration whose apply creates a table, says so in a file, then works until stopped
#: in the way STOP_MODE names: one long statement, a COPY fed row by row, or a
#: server-side cursor read a row at a time.
STOP_PROBE = "20261201_2101_none_to_neon_stop_probe"
STOP_PROBE_SCRIPT = '''
import os
from pathlib import Path
from opsgate.migrate import Plan

SOURCE = "none"
TARGET = "neon"
DESCRIPTION = "a migration that works until it is stopped"
TARGET_TABLES = ("stop_probe",)

def preconditions(ctx):
    return []

def plan(ctx):
    return Plan(payload={"mode": os.environ["STOP_MODE"]}, source_counts={})

def apply(ctx, plan):
    ctx.conn.execute("CREATE TABLE stop_probe (n bigint)")
    Path(os.environ["STOP_MARKER"]).write_text("in apply")
    mode = os.environ["STOP_MODE"]
    if mode == "statement":
        ctx.conn.execute("SELECT pg_sleep(120)")
    elif mode == "copy":
        with ctx.conn.cursor().copy("COPY stop_probe (n) FROM STDIN") as copy:
            n = 0
            while True:
                n += 1
                copy.write_row((n,))
    else:
        with ctx.conn.cursor(name="stop_probe_cursor") as cur:
            cur.itersize = 1
            cur.execute("SELECT pg_sleep(0.01), g FROM generate_series(1, 100000) g")
            for _row in cur:
                pass

def verify(ctx, plan):
    return []
'''


@pytest.mark.parametrize(("mode", "sig"), [("statement", signal.SIGTERM),
                                           ("copy", signal.SIGTERM),
                                           ("cursor", signal.SIGINT)],
                         ids=["statement-SIGTERM", "copy-SIGTERM", "cursor-SIGINT"])
def test_a_migration_stopped_mid_apply_rolls_back_and_says_so(
        big: tuple[Sandbox, str], tmp_path: Path, mode: str, sig: signal.Signals) -> None:
    _sb, url = big
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / f"{STOP_PROBE}.py").write_text(STOP_PROBE_SCRIPT)
    marker = tmp_path / "in-apply"
    out, err = tmp_path / "summary.json", tmp_path / "stderr"
    env = clean_env(DATABASE_URL=url, STOP_MODE=mode, STOP_MARKER=str(marker))
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opsgate.cli", "migrate", "--migrations-dir",
             str(migrations), "run", STOP_PROBE, "--apply"],
            cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
    app = f"opsgate-migrate {STOP_PROBE}"
    with reaped(proc):
        wait_for("the apply under way", lambda: marker.exists() and _server_rows(
            url, "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "AND state = 'active'", app), proc, out=err)
        stopped = stop(proc, sig, out=err)
    said = err.read_text(errors="replace")
    print(f"migration ({mode}) stopped by {sig.name}: exit {stopped.exit_code} after "
          f"{stopped.seconds:.2f} s")
    assert_stopped_in_time(stopped, 130, said)
    summary = json.loads(out.read_text())
    assert summary["status"] == "failed", summary
    assert summary["message"].endswith("interrupted; nothing was committed"), summary
    assert "Traceback" not in said, said[-1500:]
    assert not _server_rows(url, "SELECT 1 FROM pg_class WHERE relname = 'stop_probe'")
    assert not _server_rows(url, "SELECT 1 FROM pg_stat_activity WHERE application_name = %s",
                            app)


@pytest.mark.parametrize(("phase", "sig"), [("pg_dump", signal.SIGINT),
                                            ("pg_restore", signal.SIGTERM)],
                         ids=["pg_dump-SIGINT", "pg_restore-SIGTERM"])
def test_a_stopped_refresh_leaves_the_target_as_it_was_and_no_partial_export(
        big: tuple[Sandbox, str], tmp_path: Path, phase: str, sig: signal.Signals) -> None:
    sb, url = big
    assert sb.pg is not None
    name = f"stop_mirror_{phase}"
    target_url = sb.pg.create_database(name).reveal()
    target_env = tmp_path / "target.env"
    target_env.write_text(f'DATABASE_URL="{target_url}"\n'
                          f'OPSGATE_PG_BINDIR="{sb.environ()["OPSGATE_PG_BINDIR"]}"\n')
    run_folder, out, err = tmp_path / "run", tmp_path / "out.json", tmp_path / "stderr"
    try:
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "opsgate.cli", "refresh",
                 f"--source-env-file={sb.env_file}", f"--target-env-file={target_env}",
                 "--apply", f"--out={run_folder}", "--json"],
                cwd=tmp_path, env=clean_env(), stdout=stdout, stderr=stderr)
        with reaped(proc):
            wait_for(f"{phase} running", _child(proc, phase), proc, out=err)
            stopped = stop(proc, sig, out=err)
        said = err.read_text(errors="replace")
        print(f"refresh stopped by {sig.name} during {phase}: exit {stopped.exit_code} "
              f"after {stopped.seconds:.2f} s")
        assert_stopped_in_time(stopped, 130, said)
        summary = json.loads(out.read_text())
        kept = {a["path"] for a in summary["archives"].values()}
        assert {str(p) for p in run_folder.glob("*.dump")} == kept, (
            summary["message"], summary["timings_s"])
        assert summary["status"] == "failed", summary["message"]
        assert summary["message"].startswith(f"interrupted by {sig.name}; the target was not "
                                             "changed"), summary["message"]
        assert "Traceback" not in said, said[-1500:]
        assert not stopped.children_left(), f"left running: {stopped.children_left()}"
        assert not _server_rows(url, "SELECT pid FROM pg_stat_activity "
                                "WHERE application_name = 'opsgate-refresh'")  # no wait
        assert not _server_rows(target_url, "SELECT relname FROM pg_class WHERE "
                                "relnamespace = 'public'::regnamespace")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _gate(sb: Sandbox, tmp: Path, check: str, *args: str, **env: str
          ) -> tuple[subprocess.Popen[bytes], Path]:
    """One packaged check run by the gate on ``sb`` as its own process."""
    out = tmp / "gate.out"
    (tmp / "tmp").mkdir(exist_ok=True)
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
             f"--env-file={sb.env_file}", f"--reports-dir={tmp / 'reports'}", *args,
             str(ROOT / "checks" / check)],
            cwd=ROOT, env=clean_env(TMPDIR=str(tmp / "tmp"), **env), stdout=sink,
            stderr=subprocess.STDOUT)
    return proc, out


def _assert_stopped_in_time(stopped: Stopped, out: Path) -> None:
    assert_stopped_in_time(stopped, 2, out.read_text(errors="replace"))
    assert not stopped.children_left(), f"left running: {stopped.children_left()}"


def test_a_stopped_drift_check_ends_its_query_and_its_second_process(
        big: tuple[Sandbox, str], tmp_path: Path) -> None:
    from opsgate.sandbox import datagen

    sb, url = big
    payload = tmp_path / "payload.json"
    with payload.open("w", encoding="utf-8") as f:
        datagen.write_payload(f, 5000)  # 5 MB: sorted in a second process
    proc, out = _gate(sb, tmp_path, "test_knowledge_drift.py",
                      OPSGATE_LEGACY_PAYLOAD_FILE=str(payload), RUN_OPS_KNOWLEDGE_DRIFT="true")
    reading = ("SELECT pid FROM pg_stat_activity WHERE application_name = 'opsgate-drift' "
               "AND state = 'active' AND pid <> pg_backend_pid()")
    workers: list[int] = []

    def both_sides_busy() -> bool:
        workers[:] = [p for p in descendants(proc.pid) if "_payload_worker" in _cmdline(p)]
        return bool(workers and _server_rows(url, reading))

    with reaped(proc):
        wait_for("the payload's second process and the kb read", both_sides_busy, proc,
                 out=out)
        stopped = stop(proc, signal.SIGTERM, out=out)
    print(f"drift stopped by SIGTERM: exit {stopped.exit_code} after {stopped.seconds:.2f} s")
    _assert_stopped_in_time(stopped, out)
    assert set(workers) <= set(stopped.children)  # and so none is left running
    assert not _server_rows(url, reading.replace("AND state = 'active' ", ""))
    assert not list((tmp_path / "tmp").glob("opsgate-drift-*"))


def test_a_stopped_parity_check_ends_its_download_and_deletes_its_spool(
        big: tuple[Sandbox, str], tmp_path: Path) -> None:
    _sb, url = big
    basetemp = tmp_path / "basetemp"
    proc, out = _gate(_sb, tmp_path, "test_parity.py", f"--basetemp={basetemp}")
    with reaped(proc):
        wait_for("the API's answer arriving", lambda: [
            p for p in basetemp.glob("**/constellation.spool") if p.stat().st_size > 0],
            proc, out=out)
        stopped = stop(proc, signal.SIGINT, out=out)
    print(f"parity stopped by SIGINT: exit {stopped.exit_code} after {stopped.seconds:.2f} s")
    _assert_stopped_in_time(stopped, out)
    assert not list(basetemp.glob("**/constellation.spool"))
    assert not _client_backends(url)
