"""The guarded runner: every safeguard of the runbook is enforced here, not in scripts.

One transaction holds everything: the advisory lock (transaction scoped, so a crash
releases it), preconditions, plan, apply, verify and the ledger row. A dry run
executes apply and verify too, then rolls back, so its counts are the real ones.

The run is `opsgate.operation`'s skeleton: the stages (preconditions, plan, apply,
verify, record) are the small functions below, in the runbook's order; each stops the
run the one way, by raising `Stop` with a status, an exit code and one line; the summary
is one typed `MigrationSummary` whose JSON is the one docs/migrations.md documents.
"""

from __future__ import annotations

import contextlib
import getpass
import math
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

from opsgate.clients import db
from opsgate.config import Settings, bind, unbind
from opsgate.errors import OpsgateError, first_line
from opsgate.migrate import ledger
from opsgate.migrate.api import MigrationContext, Plan
from opsgate.migrate.scripts import MigrationScript
from opsgate.operation import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Stop,
    Summary,
    iso,
    now,
)
from opsgate.verify import canon

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "MigrationSummary",
           "RunResult", "flag_refusal", "run_migration", "unstarted"]


@dataclass
class MigrationSummary(Summary):
    """The summary of one `run`, built as the stages go, so a stop at any stage (a
    refusal, a script that raises, Ctrl-C) still prints every documented field.
    ``operation`` is the migration's name."""

    migrations_dir: str | None = None
    source: str | None = None
    target: str | None = None
    target_database: str | None = None
    script_checksum: str | None = None
    payload_hash: str | None = None
    source_counts: dict[str, Any] = field(default_factory=dict)
    counts_before: dict[str, int | None] = field(default_factory=dict)
    counts_after: dict[str, int | None] = field(default_factory=dict)
    changes: dict[str, dict[str, int]] = field(default_factory=dict)
    preconditions: list[str] = field(default_factory=list)
    verify: list[str] = field(default_factory=list)
    previous: dict[str, Any] | None = None
    repeatable: bool | None = None
    reason: str | None = None
    ledger_id: int | None = None
    statement_timeout_s: float | None = None
    #: When the run started, for the ledger row (``started_at`` is its ISO form).
    started: datetime = field(default_factory=now, repr=False)

    def __post_init__(self) -> None:
        self.started_at = iso(self.started)

    def as_json(self) -> dict[str, Any]:
        """Exactly the fields docs/migrations.md lists ("The summary"), in its order: a
        reader of the summary is a script, and a field added or renamed breaks it."""
        return {
            "migration": self.operation, "migrations_dir": self.migrations_dir,
            "mode": self.mode, "status": self.status, "source": self.source,
            "target": self.target, "target_database": self.target_database,
            "script_checksum": self.script_checksum, "payload_hash": self.payload_hash,
            "hash_version": canon.VERSION, "source_counts": dict(self.source_counts),
            "target_counts": {"before": dict(self.counts_before),
                              "after": dict(self.counts_after)},
            "changes": dict(self.changes), "preconditions": list(self.preconditions),
            "verify": list(self.verify), "previous": self.previous,
            "repeatable": self.repeatable, "reason": self.reason,
            "ledger_id": self.ledger_id, "started_at": self.started_at,
            "finished_at": self.finished_at, "duration_s": self.duration_s,
            "timings_s": dict(self.timings_s),
            "statement_timeout_s": self.statement_timeout_s, "message": self.message,
            "exit_code": self.exit_code,
        }


@dataclass
class RunResult:
    """What `run_migration` answers: the summary's JSON, the exit code, the one line."""

    summary: dict[str, Any]
    exit_code: int
    message: str = ""
    problems: list[str] = field(default_factory=list)


def _result(summary: MigrationSummary) -> RunResult:
    code = EXIT_FAILED if summary.exit_code is None else summary.exit_code
    return RunResult(summary.as_json(), code, summary.message, list(summary.problems))


def mode_of(apply: bool, force: bool) -> str:
    """The summary's and the ledger's ``mode``: ``--force`` counts only with ``--apply``
    (a forced dry run is a dry run)."""
    return "force" if force and apply else ("apply" if apply else "dry-run")


def flag_refusal(*, force: bool, reason: str | None) -> str | None:
    """Why these flags cannot run, or None. A flag that would do nothing is refused
    rather than ignored: the operator believes it did something. ``--force`` without
    ``--apply`` is the dry run of a forced run (it does something: the dry run ignores
    the ledger's previous hash and checksum), so it needs its reason as well."""
    if force and not (reason and reason.strip()):
        return '--force needs --reason "..." (the reason is stored in the ledger)'
    if reason is not None and not force:
        return ("--reason is only for --force (only a forced run stores a reason); "
                "add --force or drop --reason")
    return None


def unstarted(name: str, migrations_dir: str | None, mode: str, reason: str | None,
              exit_code: int, message: str) -> RunResult:
    """The summary of a run that could not start (an unknown name, a badly named file in
    the folder, an unreadable env file): still the one documented JSON document."""
    summary = MigrationSummary(operation=name.removesuffix(".py"), mode=mode,
                               migrations_dir=migrations_dir, reason=reason)
    return _result(summary.finish("failed", exit_code, message))


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
    """One line for a database error: a lost connection and a cancelled statement
    say that nothing was committed, since that is what an operator asks next."""
    if conn.closed or conn.broken:
        return (f"the database connection was lost ({_first_line(exc, settings)}); "
                "nothing was committed")
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return f"a statement was cancelled ({_first_line(exc, settings)}); nothing was committed"
    return f"database error: {_first_line(exc, settings)}"


def _acquire_lock(conn: psycopg.Connection[Any], name: str, timeout: float) -> None:
    """Polls the transaction-scoped lock, so a crashed runner releases it and a second
    runner waits up to ``timeout`` and then names the holder's server pid."""
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
            raise Stop("locked", EXIT_FAILED,
                        f"another runner holds the lock of {name}{who}; waited {timeout:g}s")
        time.sleep(0.2)


def _first_line(exc: BaseException, settings: Settings) -> str:
    """An error as one redacted line, at most 300 characters, for the summary."""
    return settings.redactor()(first_line(exc))[:300]


@dataclass
class _Run:
    """One run's state, passed from stage to stage."""

    script: MigrationScript
    module: ModuleType
    settings: Settings
    conn: psycopg.Connection[Any]
    summary: MigrationSummary
    ctx: MigrationContext
    force: bool


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
    summary = MigrationSummary(
        operation=script.name, mode=mode_of(apply, force),
        migrations_dir=str(script.path.parent), source=script.source, target=script.target,
        target_database=settings.database_url.masked if settings.database_url else None,
        script_checksum=script.checksum, reason=reason)
    timeout = statement_timeout if statement_timeout is not None else settings.statement_timeout
    summary.statement_timeout_s = timeout or None
    try:
        refusal = flag_refusal(force=force, reason=reason)
        if refusal:
            raise Stop("refused", EXIT_FAILED, refusal)
        # The direct endpoint when there is one; else DATABASE_URL, pooled or not: the
        # whole run is one transaction with transaction-scoped lock and settings, which
        # a transaction pooler keeps on one server connection (docs/neon.md).
        url = settings.database_url_unpooled or settings.require_database_url()
        summary.target_database = url.masked
        module = script.load()
        conn = db.connect(url, redact=settings.redactor(), autocommit=False)
    except Stop as stop:
        return _result(summary.stopped(stop))
    except OpsgateError as exc:  # a usage or configuration error: nothing ran
        return _result(summary.finish("failed", EXIT_USAGE, settings.redactor()(str(exc))))
    ctx = MigrationContext(conn, settings, source, summary.mode, None, verbose=verbose)
    run = _Run(script, module, settings, conn, summary, ctx, force)
    bound = bind(settings)  # what the script reaches without ctx (a blob store) reads these
    try:
        return _result(_guarded(run, lock_timeout, timeout))
    finally:
        unbind(bound)
        conn.close()


def _guarded(run: _Run, lock_timeout: float, timeout: float | None) -> MigrationSummary:
    """The stages, then COMMIT; whatever stops them (a `Stop`, a database error, a
    script's own bug, Ctrl-C) rolls back and ends the summary with one line."""
    try:
        _begin(run, lock_timeout, timeout)
        _refuse_edited(run)
        stats0 = _xact_stats(run.conn)
        problems = _preconditions(run)
        _check_read_only(run, stats0, "preconditions")
        if problems:
            raise Stop("precondition-failed", EXIT_FAILED,
                       f"{len(problems)} precondition(s) failed: " + "; ".join(problems[:5]),
                       problems)
        plan = _plan(run)
        _check_read_only(run, stats0, "plan")
        _decide(run)
        _apply_and_verify(run, plan, stats0)
        _record(run, plan)
    except (Exception, KeyboardInterrupt) as exc:
        _rollback(run.conn)
        return run.summary.stopped(_as_stop(run, exc))
    return _commit(run)


def _as_stop(run: _Run, exc: BaseException) -> Stop:
    """Any way a run ends early, as the one `Stop`: status, exit code, one line."""
    name = run.script.name
    if isinstance(exc, Stop):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Stop("failed", EXIT_INTERRUPTED, f"{name}: interrupted; nothing was committed")
    if isinstance(exc, OpsgateError):
        return Stop("failed", EXIT_FAILED, f"{name}: {exc}")
    if isinstance(exc, psycopg.Error):
        return Stop("failed", EXIT_FAILED, f"{name}: {_db_failure(run.conn, exc, run.settings)}")
    # A script's own bug: still one summary, nothing written.
    return Stop("failed", EXIT_FAILED,
                f"{name}: the script raised {exc.__class__.__name__}: "
                f"{_first_line(exc, run.settings)}; nothing was committed")


def _begin(run: _Run, lock_timeout: float, timeout: float | None) -> None:
    """Session settings (all transaction-local), the advisory lock, the ledger table and
    the last ledger row of this migration."""
    # At least 1 ms: 0 would mean "no timeout" to PostgreSQL.
    db.pin(run.conn, lock_timeout_ms=max(1, math.ceil(lock_timeout * 1000)),
           statement_timeout_ms=max(1, math.ceil(timeout * 1000)) if timeout else None,
           application_name=f"opsgate-migrate {run.script.name}")
    with run.summary.timed("lock"):
        _acquire_lock(run.conn, run.script.name, lock_timeout)
    ledger.ensure_ledger(run.conn)
    previous = ledger.latest_applied(run.conn, run.script.name)
    if previous:
        run.summary.previous = {
            "ledger_id": previous["id"], "payload_hash": previous["payload_hash"],
            "script_checksum": previous["script_checksum"], "mode": previous["mode"],
            "finished_at": iso(previous["finished_at"]),
        }
    run.ctx.previous = run.summary.previous


def _refuse_edited(run: _Run) -> None:
    """A script edited after it was applied is what `status` and the ledger check call
    drift: running it as if nothing changed would hide that, so it needs --force."""
    previous = run.summary.previous
    if run.force or not previous or previous["script_checksum"] in (None, run.script.checksum):
        return
    raise Stop("refused", EXIT_FAILED,
               f"{run.script.name} was edited after it was applied (ledger row "
               f"{previous['ledger_id']} has script checksum "
               f"{previous['script_checksum'][:12]}…, the file now {run.script.checksum[:12]}…); "
               "re-run with --force --reason \"...\" to apply the edited script")


def _preconditions(run: _Run) -> list[str]:
    """Before plan, as the runbook orders them: a precondition guards what plan reads."""
    with run.summary.timed("preconditions"):
        problems = list(run.module.preconditions(run.ctx))
    run.summary.preconditions = problems
    return problems


def _plan(run: _Run) -> Plan:
    with run.summary.timed("plan"):
        plan: Plan = run.module.plan(run.ctx)
    run.summary.payload_hash = plan.payload_hash or canon.document_hash(plan.payload)
    run.summary.source_counts = plan.source_counts
    run.summary.repeatable = bool(getattr(run.module, "REPEATABLE", False))
    return plan


def _check_read_only(run: _Run, stats0: dict[str, tuple[int, int, int]], stage: str) -> None:
    if _xact_stats(run.conn) != stats0:
        raise Stop("failed", EXIT_FAILED,
                   f"{run.script.name}: {stage} wrote to the database; plan and "
                   "preconditions must only read")


def _decide(run: _Run) -> None:
    """Idempotency: the same payload hash is a no-op, another one is refused without
    --force, except for a repeatable script, which applies again."""
    s, previous = run.summary, run.summary.previous
    if not previous or run.force or s.payload_hash is None:
        return
    new, old = s.payload_hash, str(previous["payload_hash"])
    if old == new:
        raise Stop("noop", EXIT_OK,
                   f"{run.script.name} was already applied (ledger row {previous['ledger_id']}, "
                   f"{previous['finished_at']}) with payload hash {new[:12]}…: nothing to do")
    if not s.repeatable:
        raise Stop("refused", EXIT_FAILED,
                   f"{run.script.name} was applied (ledger row {previous['ledger_id']}) with "
                   f"payload hash {old[:12]}…, but the source now hashes {new[:12]}…; re-run "
                   "with --force --reason \"...\" to apply it again")
    # Flyway's repeatable migrations: a new source state is the very reason to run
    # again; each apply still gets its own ledger row. A dry run applies and rolls back.
    doing = "dry run: would apply again" if s.mode == "dry-run" else "applying again"
    run.ctx.log(f"repeatable: the source changed since ledger row {previous['ledger_id']} "
                f"({old[:12]}… -> {new[:12]}…); {doing}")


def _apply_and_verify(run: _Run, plan: Plan, stats0: dict[str, tuple[int, int, int]]) -> None:
    """Apply, ANALYZE what it wrote, verify: one transaction; a dry run stops here."""
    s, tables = run.summary, tuple(run.module.TARGET_TABLES)
    s.counts_before = db.count_rows(run.conn, tables)
    with s.timed("apply"):
        run.module.apply(run.ctx, plan)
    with s.timed("analyze"):
        _analyze_written(run.conn, stats0)
    with s.timed("verify"):
        s.verify = list(run.module.verify(run.ctx, plan))
    s.changes = _diff_stats(stats0, _xact_stats(run.conn))
    s.counts_after = db.count_rows(run.conn, tables)
    if s.verify:
        raise Stop("verify-failed", EXIT_FAILED,
                   "verify failed, nothing committed: " + "; ".join(s.verify[:5]), s.verify)
    if s.mode == "dry-run":
        forced = " of a forced run" if run.force else ""
        raise Stop("planned", EXIT_OK,
                   f"dry run{forced}: apply and verify ran and were rolled back; "
                   "run again with --apply to write")


def _record(run: _Run, plan: Plan) -> None:
    """The ledger row, in the same transaction as what it records."""
    s = run.summary
    s.ledger_id = ledger.append(
        run.conn, name=run.script.name, mode=s.mode, payload_hash=str(s.payload_hash),
        script_checksum=s.script_checksum, source_counts=plan.source_counts,
        target_counts={"before": s.counts_before, "after": s.counts_after,
                       "changes": s.changes},
        reason=s.reason if run.force else None,
        applied_by=f"{getpass.getuser()}@{socket.gethostname()}", started_at=s.started)


def _commit(run: _Run) -> MigrationSummary:
    """COMMIT; lost during COMMIT, the outcome cannot be known from the client."""
    s = run.summary
    try:
        run.conn.commit()
    except psycopg.Error as exc:
        s.ledger_id = None
        return s.finish("failed", EXIT_FAILED,
                        f"{run.script.name}: COMMIT did not complete "
                        f"({_first_line(exc, run.settings)}); whether it took effect is "
                        "unknown: run `opsgate migrate status` before anything else")
    return s.finish("applied", EXIT_OK,
                    f"{run.script.name} applied ({s.mode}), ledger row {s.ledger_id}")
