"""The guarded runner: every safeguard of the runbook is enforced here, not in scripts.

One transaction holds everything: the advisory lock (transaction scoped, so a crash
releases it), plan, preconditions, apply, verify and the ledger row. A dry run
executes apply and verify too, then rolls back, so its counts are the real ones.
"""

from __future__ import annotations

import contextlib
import getpass
import math
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from opsgate.config import Settings, bind, unbind
from opsgate.errors import DatabaseUnavailableError, OpsgateError, first_line
from opsgate.migrate import ledger
from opsgate.migrate.api import MigrationContext, Plan
from opsgate.migrate.scripts import MigrationScript
from opsgate.target import db
from opsgate.verify import canon

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C


@dataclass
class RunResult:
    summary: dict[str, Any]
    exit_code: int
    message: str = ""
    problems: list[str] = field(default_factory=list)


class _Stop(Exception):
    """Ends a run early with a status; the transaction is rolled back."""

    def __init__(self, status: str, exit_code: int, message: str,
                 problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.exit_code, self.message = status, exit_code, message
        self.problems = problems or []


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _first_line(exc: BaseException, settings: Settings) -> str:
    return settings.redactor()(first_line(exc))[:300]


def _xact_stats(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int, int]]:
    """Rows inserted/updated/deleted per table by this transaction so far."""
    cur = conn.execute(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables "
        "WHERE schemaname = 'public'"
    )
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in cur.fetchall()}


def _diff_stats(before: dict[str, tuple[int, int, int]],
                after: dict[str, tuple[int, int, int]]) -> dict[str, dict[str, int]]:
    out = {}
    for table in sorted(after):
        b = before.get(table, (0, 0, 0))
        a = after[table]
        d = {"inserted": a[0] - b[0], "updated": a[1] - b[1], "deleted": a[2] - b[2]}
        if any(d.values()):
            out[table] = d
    return out


def _analyze_written(conn: psycopg.Connection[Any],
                     before: dict[str, tuple[int, int, int]]) -> None:
    """ANALYZE the tables apply wrote, inside the run's transaction, before verify reads
    them back. A table apply has just emptied and refilled (or created) has no
    statistics or stale ones; the planner then guesses, and a verify that streams the
    table through a cursor can take a plan that is fine for ten rows and quadratic for
    a million (a 1M sandbox build once sat in 1005's verify for twenty minutes). The
    statistics are the transaction's own: a dry run rolls them back with everything
    else. A role that may not ANALYZE a table (not its owner) keeps the old plan."""
    written = sorted(_diff_stats(before, _xact_stats(conn)))
    if not written:
        return
    tables = sql.SQL(", ").join(sql.Identifier("public", t) for t in written)
    try:
        with conn.transaction():  # a savepoint: a refused ANALYZE leaves the run intact
            conn.execute(sql.SQL("ANALYZE {}").format(tables))
    except psycopg.errors.InsufficientPrivilege:
        pass


def _rollback(conn: psycopg.Connection[Any]) -> None:
    """Roll back if the connection still can; a lost connection has rolled back
    already (the server ends the transaction with the session)."""
    if conn.closed or conn.broken:
        return
    with contextlib.suppress(psycopg.Error):
        conn.rollback()


def _db_failure(conn: psycopg.Connection[Any], exc: psycopg.Error, settings: Settings) -> str:
    if conn.closed or conn.broken:
        return (f"the database connection was lost ({_first_line(exc, settings)}); "
                "nothing was committed")
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return f"a statement was cancelled ({_first_line(exc, settings)}); nothing was committed"
    return f"database error: {_first_line(exc, settings)}"


def _acquire_lock(conn: psycopg.Connection[Any], name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (ledger.LOCK_CLASS, name)
        ).fetchone()
        if row and row[0]:
            return
        if time.monotonic() >= deadline:
            holder = conn.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                "AND objid = hashtext(%s)::oid AND granted LIMIT 1",
                (ledger.LOCK_CLASS, name),
            ).fetchone()
            who = f" (server pid {holder[0]})" if holder else ""
            raise _Stop("locked", EXIT_FAILED,
                        f"another runner holds the lock of {name}{who}; waited {timeout:g}s")
        time.sleep(0.2)


def run_migration(
    script: MigrationScript,
    settings: Settings,
    *,
    apply: bool = False,
    force: bool = False,
    reason: str | None = None,
    source: str | None = None,
    lock_timeout: float = 30.0,
    statement_timeout: float | None = None,
    verbose: bool = True,
) -> RunResult:
    """Run one migration under every safeguard; never raises for expected failures.
    ``verbose=False``: the script's progress lines are not printed (the summary says
    what happened)."""
    started = _now()
    t0 = time.monotonic()
    mode = "force" if force and apply else ("apply" if apply else "dry-run")
    summary: dict[str, Any] = {
        "migration": script.name,
        "migrations_dir": str(script.path.parent),
        "mode": mode,
        "status": "failed",
        "source": script.source,
        "target": script.target,
        "target_database": settings.database_url.masked if settings.database_url else None,
        "script_checksum": script.checksum,
        "payload_hash": None,
        "hash_version": canon.VERSION,
        "source_counts": {},
        "target_counts": {"before": {}, "after": {}},
        "changes": {},
        "preconditions": [],
        "verify": [],
        "previous": None,
        "repeatable": None,
        "reason": reason,
        "ledger_id": None,
        "started_at": _iso(started),
        "finished_at": None,
        "duration_s": None,
        "timings_s": {},
        "message": "",
    }

    def finish(status: str, code: int, message: str, problems: list[str] | None = None
               ) -> RunResult:
        summary["status"] = status
        summary["message"] = message
        summary["finished_at"] = _iso(_now())
        summary["duration_s"] = round(time.monotonic() - t0, 3)
        summary["exit_code"] = code
        return RunResult(summary, code, message, problems or [])

    if force and not (reason and reason.strip()):
        return finish("refused", EXIT_USAGE,
                      '--force needs --reason "..." (the reason is stored in the ledger)')
    try:
        # The direct endpoint when there is one; else DATABASE_URL, pooled or not: the
        # whole run is one transaction with transaction-scoped lock and settings, which
        # a transaction pooler keeps on one server connection (docs/neon.md).
        url = settings.database_url_unpooled or settings.require_database_url()
        module = script.load()
    except OpsgateError as exc:
        return finish("failed", EXIT_USAGE, str(exc))
    summary["target_database"] = url.masked

    try:
        conn = db.connect(url, redact=settings.redactor(), autocommit=False)
    except DatabaseUnavailableError as exc:
        return finish("failed", EXIT_USAGE, str(exc))

    timings: dict[str, float] = summary["timings_s"]

    def timed(label: str, fn: Any, *args: Any) -> Any:
        s = time.monotonic()
        try:
            return fn(*args)
        finally:
            timings[label] = round(time.monotonic() - s, 3)

    timeout = statement_timeout if statement_timeout is not None else settings.statement_timeout
    summary["statement_timeout_s"] = timeout or None
    bound = bind(settings)  # what the script reaches without ctx (a blob store) reads these
    try:
        try:
            # At least 1 ms: 0 would mean "no timeout" to PostgreSQL.
            db.pin(conn, lock_timeout_ms=max(1, math.ceil(lock_timeout * 1000)),
                   statement_timeout_ms=max(1, math.ceil(timeout * 1000)) if timeout else None,
                   application_name=f"opsgate-migrate {script.name}")
            timed("lock", _acquire_lock, conn, script.name, lock_timeout)
            ledger.ensure_ledger(conn)
            previous = ledger.latest_applied(conn, script.name)
            if previous:
                summary["previous"] = {
                    "ledger_id": previous["id"], "payload_hash": previous["payload_hash"],
                    "script_checksum": previous["script_checksum"], "mode": previous["mode"],
                    "finished_at": _iso(previous["finished_at"]),
                }
            ctx = MigrationContext(conn, settings, source, mode, summary["previous"],
                                   verbose=verbose)
            stats0 = _xact_stats(conn)
            plan: Plan = timed("plan", module.plan, ctx)
            payload_hash = plan.payload_hash or canon.document_hash(plan.payload)
            summary["payload_hash"] = payload_hash
            summary["source_counts"] = plan.source_counts

            repeatable = bool(getattr(module, "REPEATABLE", False))
            summary["repeatable"] = repeatable
            if previous and not force:
                if previous["payload_hash"] == payload_hash:
                    raise _Stop("noop", EXIT_OK,
                                f"{script.name} was already applied (ledger row {previous['id']}, "
                                f"{_iso(previous['finished_at'])}) with payload hash "
                                f"{payload_hash[:12]}…: nothing to do")
                if repeatable:
                    # Flyway's repeatable migrations: a new source state is the very
                    # reason to run again; each apply still gets its own ledger row.
                    # A dry run applies and rolls back: it would apply, it does not.
                    doing = ("dry run: would apply again" if mode == "dry-run"
                             else "applying again")
                    ctx.log(f"repeatable: the source changed since ledger row "
                            f"{previous['id']} ({previous['payload_hash'][:12]}… -> "
                            f"{payload_hash[:12]}…); {doing}")
                else:
                    raise _Stop("refused", EXIT_FAILED,
                                f"{script.name} was applied (ledger row {previous['id']}) "
                                f"with payload hash {previous['payload_hash'][:12]}…, but the "
                                f"source now hashes {payload_hash[:12]}…; re-run with --force "
                                "--reason \"...\" to apply it again")

            problems = list(timed("preconditions", module.preconditions, ctx))
            summary["preconditions"] = problems
            if _xact_stats(conn) != stats0:
                raise _Stop("failed", EXIT_FAILED,
                            f"{script.name}: plan or preconditions wrote to the database; "
                            "they must only read")
            if problems:
                raise _Stop("precondition-failed", EXIT_FAILED,
                            f"{len(problems)} precondition(s) failed: " + "; ".join(problems[:5]),
                            problems)

            tables = tuple(module.TARGET_TABLES)
            summary["target_counts"]["before"] = db.count_rows(conn, tables)
            timed("apply", module.apply, ctx, plan)
            timed("analyze", _analyze_written, conn, stats0)
            vproblems = list(timed("verify", module.verify, ctx, plan))
            summary["verify"] = vproblems
            summary["changes"] = _diff_stats(stats0, _xact_stats(conn))
            summary["target_counts"]["after"] = db.count_rows(conn, tables)
            if vproblems:
                raise _Stop("verify-failed", EXIT_FAILED,
                            "verify failed, nothing committed: " + "; ".join(vproblems[:5]),
                            vproblems)
            if mode == "dry-run":
                raise _Stop("planned", EXIT_OK,
                            "dry run: apply and verify ran and were rolled back; "
                            "run again with --apply to write")
            summary["ledger_id"] = ledger.append(
                conn, name=script.name, mode=mode, payload_hash=payload_hash,
                script_checksum=summary["script_checksum"],
                source_counts=plan.source_counts,
                target_counts={**summary["target_counts"], "changes": summary["changes"]},
                reason=reason if force else None,
                applied_by=f"{getpass.getuser()}@{socket.gethostname()}",
                started_at=started,
            )
        except _Stop as stop:
            _rollback(conn)
            return finish(stop.status, stop.exit_code, stop.message, stop.problems)
        except OpsgateError as exc:
            _rollback(conn)
            return finish("failed", EXIT_FAILED, f"{script.name}: {exc}")
        except psycopg.Error as exc:
            _rollback(conn)
            return finish("failed", EXIT_FAILED,
                          f"{script.name}: {_db_failure(conn, exc, settings)}")
        except KeyboardInterrupt:
            _rollback(conn)
            return finish("failed", EXIT_INTERRUPTED,
                          f"{script.name}: interrupted; nothing was committed")
        except Exception as exc:  # a script's own bug: still one summary, nothing written
            _rollback(conn)
            return finish("failed", EXIT_FAILED,
                          f"{script.name}: the script raised {exc.__class__.__name__}: "
                          f"{_first_line(exc, settings)}; nothing was committed")
        try:
            conn.commit()
        except psycopg.Error as exc:
            summary["ledger_id"] = None
            return finish("failed", EXIT_FAILED,
                          f"{script.name}: COMMIT did not complete "
                          f"({_first_line(exc, settings)}); whether it took effect is "
                          "unknown: run `opsgate migrate status` before anything else")
    finally:
        unbind(bound)
        conn.close()
    return finish("applied", EXIT_OK,
                  f"{script.name} applied ({mode}), ledger row {summary['ledger_id']}")
