"""What opsgate says where an ``assert`` used to stand (tests/unit/test_no_assert.py): a
row the server did not send, a pipe not asked for, a cluster or a sandbox used before it
started. Each is one line naming what is missing, and stays under ``python -O``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from opsgate.clients.db import one_row
from opsgate.errors import DatabaseUnavailableError, OpsgateError, PostgresUnavailableError
from opsgate.processes import piped
from opsgate.sandbox import Sandbox
from opsgate.sandbox.embedded import EmbeddedPostgres


def test_one_row_returns_the_row_and_names_a_missing_one(pg: EmbeddedPostgres) -> None:
    with pg.connect(autocommit=True) as conn:
        assert one_row(conn.execute("SELECT 1, 'x'"), "a constant") == (1, "x")
        with pytest.raises(DatabaseUnavailableError) as lost:
            one_row(conn.execute("SELECT 1 WHERE false"), "the database's counts")
        assert str(lost.value) == ("the database's counts: the server answered with no "
                                   "row where one is always returned")
        # The connection is usable after it: nothing was left half-read.
        assert one_row(conn.execute("SELECT 2"), "a constant") == (2,)


def test_piped_returns_the_stream_and_refuses_one_not_asked_for() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "print('out')"], stdout=subprocess.PIPE)
    try:
        assert piped(proc.stdout).read() == b"out\n"
        with pytest.raises(TypeError, match=r"without subprocess\.PIPE"):
            piped(proc.stdin)
    finally:
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_cluster_not_started_says_so() -> None:
    cluster = EmbeddedPostgres()
    with pytest.raises(PostgresUnavailableError, match="cluster not started"):
        _ = cluster.datadir
    with pytest.raises(PostgresUnavailableError, match="cluster not started"):
        cluster.save_as_template(Path("unused"))


def test_a_sandbox_not_running_says_so(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    with pytest.raises(OpsgateError, match="the sandbox is not running"):
        sandbox.environ()


def test_the_guards_hold_under_python_O(pg: EmbeddedPostgres) -> None:
    """The same refusals in an interpreter that drops asserts."""
    code = (
        "import psycopg, sys\n"
        "from opsgate.clients.db import one_row\n"
        "from opsgate.errors import DatabaseUnavailableError\n"
        "assert False, 'asserts are on'\n"
        "with psycopg.connect(sys.argv[1], autocommit=True) as conn:\n"
        "    try:\n"
        "        one_row(conn.execute('SELECT 1 WHERE false'), 'probe')\n"
        "    except DatabaseUnavailableError as exc:\n"
        "        print(exc)\n")
    run = subprocess.run([sys.executable, "-O", "-c", code, pg.url().reveal()],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ("probe: the server answered with no row where one is "
                                  "always returned")
