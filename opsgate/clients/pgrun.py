"""Running PostgreSQL's client tools: the one place the drill and the refresh start
pg_dump, pg_restore and psql, with their passwords off every command line.

Also the one policy for restoring an archive made by newer tools into an older
server: pg_restore 17 and later always write ``SET transaction_timeout = 0``, a setting
servers before 17 reject, and pg_restore has no switch to leave it out. pg_dump must be
at least the server's version, so a PostgreSQL 17 client against Neon's 14-16 is the
norm, not an accident. Both the drill and the refresh therefore stream pg_restore's
SQL script through psql without that one line (`restore_archive`), rather than one of
them refusing what the other does.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from opsgate.clients.pgtools import PgBinaries, tool_verdict
from opsgate.clients.schema import CONTRACT_TABLES
from opsgate.processes import exited, piped, wait_exit
from opsgate.sensitive import SecretUrl

#: The one line pg_restore 17+ always writes that servers before 17 reject.
PG17_ONLY_SET = b"SET transaction_timeout = 0;\n"

ErrorType = Callable[[str], Exception]


def tool_env(url: SecretUrl, *, app_name: str | None = None,
             read_only: bool = False) -> dict[str, str]:
    """The child's environment: the password in PGPASSWORD (``ps`` shows command lines,
    not environments). ``read_only`` starts the tool's own session with
    ``default_transaction_read_only``: the session is gone when the tool exits, so no
    shared connection keeps the setting. An inherited PGOPTIONS is never passed on."""
    env = dict(os.environ)
    env.pop("PGOPTIONS", None)
    if url.password:
        env["PGPASSWORD"] = url.password
    if app_name:
        env["PGAPPNAME"] = app_name
    if read_only:
        env["PGOPTIONS"] = "-c default_transaction_read_only=on"
    return env


def run_tool(args: Sequence[str], what: str, env: dict[str, str],
             redact: Callable[[str], str], error: ErrorType, hint: str = "") -> None:
    """Run one tool to its end; a failure raises ``error`` with one line: what failed,
    its exit code and the line of its stderr that says why (`tool_verdict`), redacted."""
    proc = subprocess.run(list(args), capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise error(f"{what} failed (exit {proc.returncode}): "
                    f"{redact(tool_verdict(proc.stderr))}{hint}")


def contract_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """The contract tables present in ``conn``'s public schema, in contract order."""
    present = {r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    return [t for t in CONTRACT_TABLES if t in present]


def restore_archive(tools: PgBinaries, archive: Path, url: SecretUrl, server_major: int,
                    what: str, redact: Callable[[str], str], error: ErrorType, *,
                    options: Sequence[str] = (), jobs: int = 1,
                    app_name: str | None = None) -> str:
    """Restore ``archive`` into ``url`` with pg_restore ``options`` (``--no-owner``,
    ``--single-transaction``, ...); returns how, in words, for the evidence.

    Tools older than 17, or a server of 17 or later: pg_restore itself. Tools of 17 or
    later into an older server: pg_restore's script through psql without the one line
    the server rejects (``--jobs`` does not apply to a script)."""
    env = tool_env(url, app_name=app_name)
    if tools.major < 17 or server_major >= 17:
        jobs_opt = [f"--jobs={jobs}"] if jobs > 1 else []
        run_tool([str(tools.tool("pg_restore")), *jobs_opt, *options, "--exit-on-error",
                  f"--dbname={url.without_password}", str(archive)], what, env, redact, error)
        return f"pg_restore{f' --jobs={jobs}' if jobs > 1 else ''}"
    _through_psql(tools, archive, url, options, what, redact, error, env)
    return (f"pg_restore {tools.version} script through psql, without its "
            f"PostgreSQL 17-only 'SET transaction_timeout' (server is {server_major})")


def _through_psql(tools: PgBinaries, archive: Path, url: SecretUrl, options: Sequence[str],
                  what: str, redact: Callable[[str], str], error: ErrorType,
                  env: dict[str, str]) -> None:
    """pg_restore's SQL script, streamed into psql with that one line dropped (outside
    COPY data, where the same text could be a row). Memory stays one line deep; the
    two stderrs go to unnamed temporary files (no folder to leave behind). psql stops at
    the first error (ON_ERROR_STOP), and a ``--single-transaction`` script's BEGIN is
    then rolled back as psql disconnects: all or nothing, as pg_restore itself. A stop
    (KeyboardInterrupt) kills both tools at once rather than wait for psql's statement:
    the refresh streams from its main thread, within CI's grace after SIGTERM."""
    psql = tools.tool("psql")
    if not os.access(psql, os.X_OK):
        raise error(f"{what}: restoring a PostgreSQL {tools.major} archive into an older "
                    f"server needs psql beside pg_restore in {tools.bindir}")
    with tempfile.TemporaryFile() as restore_err, tempfile.TemporaryFile() as psql_err:
        restore = subprocess.Popen(
            [str(tools.tool("pg_restore")), *options, "--file=-", str(archive)],
            stdout=subprocess.PIPE, stderr=restore_err, env=env)
        sink = subprocess.Popen(
            [str(psql), "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
             f"--dbname={url.without_password}"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=psql_err, env=env)
        dump, script = piped(restore.stdout), piped(sink.stdin)
        in_copy = False
        ended = False
        try:
            for line in dump:
                if in_copy:
                    in_copy = line != b"\\.\n"
                elif line == PG17_ONLY_SET:
                    continue
                elif line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
                    in_copy = True
                script.write(line)
            ended = True
        except BrokenPipeError:
            ended = True  # psql stopped on an error: its own message says which
        finally:
            if not ended:  # a stop: waiting would wait for psql's statement to end
                for proc in (restore, sink):
                    if not exited(proc):
                        proc.kill()
            with contextlib.suppress(BrokenPipeError):
                script.close()
            dump.close()
            for proc in (restore, sink):
                wait_exit(proc, None)
        for proc, err, tool in ((sink, psql_err, "psql"), (restore, restore_err, "pg_restore")):
            if proc.returncode != 0:
                err.seek(0)
                raise error(f"{what} failed ({tool} exit {proc.returncode}): "
                            f"{redact(tool_verdict(err.read().decode(errors='replace')))}")
