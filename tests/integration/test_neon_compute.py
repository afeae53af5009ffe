"""What a Neon compute does to a run: it wakes slowly from scale to zero, and a restart
ends the open connections (57P01). A slow first connection passes within the connect
time-out and says how long it waited; a read-only check whose connection was ended runs
once more on a new one, and a second loss fails it in one line; a check that does not
read through the read-only session (the drill writes) is never tried again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from opsgate.pytest_plugin.fixtures import SLOW_CONNECT_S
from opsgate.sandbox import Sandbox
from tests.gate_helpers import ROOT, clean_env, gate_project
from tests.waits import until

#: Ends its own connection ``TERMINATIONS`` times (as a compute restart does), counting
#: its attempts in ``ATTEMPTS_FILE``.
CHECKS = """
import os
import pathlib

import psycopg
import pytest


class One:
    def __init__(self, one):
        self.one = one

    def as_json(self):
        return {"one": self.one}


def _attempt():
    marker = pathlib.Path(os.environ["ATTEMPTS_FILE"])
    n = int(marker.read_text()) if marker.exists() else 0
    marker.write_text(str(n + 1))
    return n


@pytest.mark.health
def test_reads_through_a_restart(target_db, evidence):
    # Ended after the transaction's first statement: that one travels in a pipeline with
    # BEGIN, and libpq's pipeline reports a connection ended under it as "server closed
    # the connection unexpectedly", without the server's 57P01 line.
    target_db.execute("SELECT 1")
    if _attempt() < int(os.environ["TERMINATIONS"]):
        target_db.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    (one,) = target_db.execute("SELECT 1").fetchone()
    evidence.set(One(one))


@pytest.mark.neon_drill
def test_own_session_is_not_tried_again():
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        if _attempt() < int(os.environ["TERMINATIONS"]):
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        conn.execute("SELECT 1")
"""


def _run(pytester: pytest.Pytester, url: str, marker: str, terminations: int
         ) -> tuple[int, str, int]:
    gate_project(pytester, CHECKS)
    attempts = pytester.path / f"attempts-{marker}"
    env = clean_env(DATABASE_URL=url, ATTEMPTS_FILE=str(attempts),
                    TERMINATIONS=str(terminations))
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                        "--no-reports", "-m", marker], cwd=pytester.path, env=env,
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr, int(attempts.read_text())


def test_a_read_only_check_whose_connection_ends_runs_once_more(
        pytester: pytest.Pytester, fresh_db: str) -> None:
    code, out, attempts = _run(pytester, fresh_db, "health", terminations=1)
    assert code == 0, out
    assert attempts == 2
    assert ("the database ended its connection (terminating connection due to "
            "administrator command); tried once more on a new connection, and it passed"
            ) in out, out


def test_a_second_loss_fails_in_one_line(pytester: pytest.Pytester, fresh_db: str) -> None:
    code, out, attempts = _run(pytester, fresh_db, "health", terminations=2)
    assert code == 1, out
    assert attempts == 2
    line = CHECKS.splitlines().index("def test_reads_through_a_restart(target_db, evidence):")
    assert (f"checks/test_all.py:{line}: the database ended this check's connection twice "
            "(terminating connection due to administrator command; then terminating "
            "connection due to administrator command); a read-only check is tried once "
            "more, no more") in out, out
    assert "Traceback" not in out


def test_a_check_on_its_own_session_is_never_tried_again(
        pytester: pytest.Pytester, fresh_db: str) -> None:
    code, out, attempts = _run(pytester, fresh_db, "neon_drill", terminations=1)
    assert code == 1, out
    assert attempts == 1


@pytest.fixture(scope="module")
def neon() -> Iterator[Sandbox]:
    with Sandbox.start(profile="neon") as sb:
        yield sb


def _connections_to(port: int) -> int:
    """Clients' TCP connections to ``port`` on this machine, open or opening (the kernel
    completes the handshake for a stopped server: the client then waits for its first
    answer). A pooler's own connections to the server count too: compare with a count
    taken before."""
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                fields = row.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                found += remote_port == port and fields[3] in ("01", "02")
    return found


@pytest.mark.pgbouncer
@pytest.mark.parametrize("paused", ["pooler", "server"])
def test_a_slow_first_connection_passes_and_says_how_long(neon: Sandbox, tmp_path: Path,
                                                          paused: str) -> None:
    """The pooler (for a check on the pooled endpoint) or the server's postmaster (for
    the drill, on the direct one) is paused (stopped) while the gate connects, as a
    compute waking from scale to zero keeps a client waiting, and resumed a little past
    the time from which the gate says how long it waited (`SLOW_CONNECT_S`) after its
    connection reached it."""
    assert neon.neon is not None and neon.pg is not None
    if paused == "pooler":
        pooler = neon.neon._started()
        pid, port, marker = pooler.pid, pooler.port, "health"
    else:
        postmaster = (neon.pg.datadir / "postmaster.pid").read_text().split()[0]
        pid, port, marker = int(postmaster), neon.pg.port, "neon_drill"
    assert pid is not None and port is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        before = _connections_to(port)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
             f"--env-file={neon.env_file}", f"--reports-dir={tmp_path / 'reports'}",
             "-m", marker], cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while _connections_to(port) <= before:
            assert proc.poll() is None and time.monotonic() < deadline, "never connected"
            time.sleep(0.02)
        # The pause itself, how long the compute takes to wake: the gate's wait includes
        # it, so it is past SLOW_CONNECT_S whatever the machine's load.
        time.sleep(SLOW_CONNECT_S + 0.1)
    finally:
        os.kill(pid, signal.SIGCONT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-2000:]
    assert "accepted the connection after" in out, out[-2000:]
    assert "(connect time-out 10 s): a Neon compute waking from scale to zero" in out


#: A check's backend waiting on a lock: its transaction's first statement, sent in one
#: pipeline with BEGIN and the settings that name it (``opsgate-check``).
_WAITING = ("SELECT pid, query FROM pg_stat_activity WHERE application_name = 'opsgate-check' "
            "AND wait_event_type = 'Lock' AND NOT pid = ANY(%s)")


def _end_first_statements(sb: Sandbox, table: str, ends: int,
                          gate: subprocess.Popen[str]) -> list[str]:
    """Hold ``table`` locked, so that a check's first statement reading it waits, and
    end the server backend under ``ends`` such statements in turn (through the pooler:
    ``pg_terminate_backend`` as a compute restart would); then let go. The statements
    ended."""
    assert sb.neon is not None
    ended: list[int] = []
    statements: list[str] = []
    with psycopg.connect(sb.neon.admin_url.reveal()) as holder, \
            psycopg.connect(sb.neon.admin_url.reveal(), autocommit=True) as admin:
        holder.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
            sql.Identifier(table)))
        found: list[Any] = []

        def waiting() -> bool:
            assert gate.poll() is None, gate.communicate()[0][-3000:]
            found[:] = admin.execute(_WAITING, (ended,)).fetchall()
            return bool(found)

        while len(ended) < ends:
            until(waiting, f"a check's statement waiting on {table}")
            (pid, query), = found
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            ended.append(pid)
            statements.append(query)
        holder.rollback()
    return statements


def _gate_killed_under(sb: Sandbox, tmp_path: Path, test: str, table: str, ends: int,
                       **env: str) -> tuple[int, str, dict[str, Any], list[str]]:
    """The gate on ``test`` through the pooler, its first statement's backend ended
    ``ends`` times: exit code, output, the test's entry of summary.json, the statements
    ended."""
    gate = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
         f"--env-file={sb.env_file}", f"--reports-dir={tmp_path / 'reports'}", test],
        cwd=ROOT, env=clean_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        statements = _end_first_statements(sb, table, ends, gate)
        out, _ = gate.communicate(timeout=60)
    finally:
        if gate.poll() is None:
            gate.kill()
            gate.communicate()
    (run_dir,) = (tmp_path / "reports" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    (entry,) = [t for c in summary["checks"] for t in c["tests"] if t["nodeid"] == test]
    return gate.returncode, out, entry, statements


ENDED = "terminating connection due to administrator command"

#: The checks that read through the run's read-only session, the table each one's first
#: statement reads, the flag that turns it on, and the statement's text.
ON_THE_RUN_SESSION = [
    pytest.param("checks/test_health.py::test_row_counts", "kb_entities",
                 "RUN_OPS_HEALTH", "query_to_xml", id="target_db"),
    pytest.param("checks/test_blob_fallback.py::test_blob_and_neon_hashes_match",
                 "admin_content_state", "RUN_OPS_BLOB_FALLBACK", "FROM admin_content_state",
                 id="run_session"),
]


@pytest.mark.pgbouncer
@pytest.mark.parametrize(("test", "table", "flag", "statement"), ON_THE_RUN_SESSION)
def test_a_check_ended_under_its_first_statement_through_the_pooler_runs_once_more(
        neon: Sandbox, tmp_path: Path, test: str, table: str, flag: str,
        statement: str) -> None:
    """PgBouncer hands the client the server's 57P01 before it closes the connection:
    psycopg then failed to leave the pipeline the first statement travels in ("cannot
    exit pipeline mode while busy"), which hid the loss, left the connection open, and
    failed the check with two tracebacks instead of running it once more."""
    code, out, entry, statements = _gate_killed_under(neon, tmp_path, test, table, 1,
                                                      **{flag: "true"})
    assert statement in statements[0]
    assert code == 0, out[-3000:]
    assert entry["outcome"] == "passed"
    assert entry["evidence"]["connection_lost_and_retried"] == ENDED
    assert (f"opsgate: NOTE: {test}: the database ended its connection ({ENDED}); tried "
            "once more on a new connection, and it passed") in out, out[-3000:]


@pytest.mark.pgbouncer
@pytest.mark.parametrize(("test", "table", "flag", "statement"), ON_THE_RUN_SESSION)
def test_a_check_ended_twice_under_its_first_statement_fails_in_one_line(
        neon: Sandbox, tmp_path: Path, test: str, table: str, flag: str,
        statement: str) -> None:
    code, out, entry, statements = _gate_killed_under(neon, tmp_path, test, table, 2,
                                                      **{flag: "true"})
    assert all(statement in s for s in statements)
    assert code == 1, out[-3000:]
    line = (f"the database ended this check's connection twice ({ENDED}; then {ENDED}); "
            "a read-only check is tried once more, no more")
    assert entry["outcome"] == "failed" and entry["message"] == line, entry
    assert entry["evidence"]["connection_lost_and_retried"] == ENDED
    assert f"{test.split('::')[0]}:" in out and line in out, out[-3000:]
    assert "Traceback" not in out and "pipeline" not in out, out[-3000:]


@pytest.mark.pgbouncer
def test_the_ledger_read_at_set_up_ended_by_the_database_fails_in_one_line(
        neon: Sandbox, tmp_path: Path) -> None:
    """The ledger's rows are read by a fixture, at set-up, so not tried again as a
    test's read is: the loss fails the check in one line, not psycopg's traceback."""
    test = "checks/test_ledger.py::test_every_migration_is_applied_with_a_payload_hash"
    code, out, entry, statements = _gate_killed_under(neon, tmp_path, test,
                                                      "admin_migrations", 1)
    assert "admin_migrations" in statements[0]
    assert code == 1, out[-3000:]
    assert entry["outcome"] == "error", entry
    assert entry["message"] == f"reading admin_migrations failed: {ENDED}", entry
    assert "Traceback" not in out and "psycopg" not in out, out[-3000:]
