"""One refresh, step by step: guard, export both, verify the source, then (``--apply``)
restore the source's export into the target, prove it with canon-v1 table hashes and
record it in the target's ledger.

The run is `opsgate.operation`'s skeleton: the stages (preconditions, plan, apply,
verify, record) are the small functions below, in the runbook's order; each stops the
run the one way, by raising `Stop` with a status, an exit code and one line; the summary
is one typed `RefreshSummary` whose JSON is the one docs/refresh.md documents.

What is written where:

- the source: never. Every transaction on it is ``READ ONLY`` (begun so, checked with
  ``transaction_read_only``, and its write counters read back as zero); its export
  runs with ``default_transaction_read_only=on`` in the export's own session.
- the target, dry run: nothing (read-only transactions only); no file either: a dry run
  reads both sides, checks every guard and the source's markers, and says where
  ``--apply`` would export them.
- the target, ``--apply``: the restore (one transaction: all or nothing), then one
  ``admin_migrations`` row.
- files, ``--apply`` only: the run folder, with both exports (made before the target is
  touched) and ``summary.json``, kept.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from opsgate import interrupts, progress
from opsgate.children import children_running
from opsgate.clients import db, pgrun
from opsgate.clients.pgtools import PgBinaries, find_client_tools, url_wants_tls
from opsgate.config import Settings, read_env_file
from opsgate.errors import (
    ConfigError,
    DatabaseUnavailableError,
    OpsgateError,
    PostgresUnavailableError,
    first_line,
)
from opsgate.migrate import ledger
from opsgate.operation import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Stop
from opsgate.refresh import archive, markers
from opsgate.refresh.errors import RefreshError
from opsgate.refresh.identity import (
    Endpoint,
    ServerIdentity,
    endpoint_of,
    production_signs,
    same_database,
    server_identity,
)
from opsgate.refresh.summary import RefreshSummary
from opsgate.sensitive import SecretUrl
from opsgate.verify import canon
from opsgate.verify.expectations import Expectations

__all__ = ["FROM_ENVIRONMENT", "RefreshOptions", "RefreshResult", "default_run_folder",
           "load_side", "refresh"]

#: Variables a refresh takes from the process environment: where the PostgreSQL tools
#: are. Everything about either database comes from its env file alone, so a stray
#: DATABASE_URL in the shell can never turn the target into production.
FROM_ENVIRONMENT = ("OPSGATE_PG_BINDIR",)


@dataclass
class RefreshOptions:
    source_env_file: Path
    target_env_file: Path
    apply: bool = False
    #: The run folder (must not exist, or be empty); default reports/refresh/<stamp>.
    out: Path | None = None
    #: The target's name (host:port/database) when it looks like production and that is
    #: intended; it must match the target exactly.
    approve_target: str | None = None
    #: Overrides the source env file's OPSGATE_EXPECTATIONS_FILE.
    expectations_file: str | None = None


@dataclass
class RefreshResult:
    """What `refresh` answers: the summary's JSON, the exit code, the one line."""

    summary: dict[str, Any]
    exit_code: int
    message: str
    problems: list[str] = field(default_factory=list)


def load_side(path: Path, which: str) -> tuple[Settings, dict[str, str]]:
    """One side's settings from its env file alone (plus `FROM_ENVIRONMENT`)."""
    try:
        values = read_env_file(path)
    except ConfigError as exc:
        raise ConfigError(f"--{which}-env-file {path}: "
                          f"{str(exc).split(': ', 1)[-1]}") from None
    settings = Settings.load(env_file=path, from_environment=FROM_ENVIRONMENT)
    if settings.database_url is None:
        # Not MissingEnvError: its advice (set it in the environment) does not hold here.
        raise ConfigError(f"--{which}-env-file {path} sets no DATABASE_URL (nor POSTGRES_URL): "
                          f"the {which} database")
    return settings, values


def default_run_folder() -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Path("reports") / "refresh" / f"{stamp}_{os.getpid()}"


def _make_run_folder(path: Path) -> Path:
    """Created 0700 (the exports are copies of production); an existing folder is used
    only when empty, so no archive is ever overwritten."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"--out {path} exists and is not an empty folder; a refresh "
                          "never overwrites earlier exports")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def _hashes(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, canon.TableHash | None]:
    present = set(pgrun.contract_tables(conn))
    return {t: canon.table_hash(conn, t) if t in present else None for t in tables}


def _combined(hashes: dict[str, canon.TableHash | None]) -> str:
    return canon.combined_hash({t: h.sha256 if h else None for t, h in hashes.items()})


def _writes_in_transaction(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
                       "FROM pg_stat_xact_user_tables").fetchone()
    return int(row[0]) if row else 0


@dataclass
class _Run:
    """One refresh's state, passed from stage to stage. What the run has made (the run
    folder, the connections, the programs it may have started) lives here, so whatever
    stops it can still write the summary and undo what is half-done."""

    options: RefreshOptions
    summary: RefreshSummary
    log: Callable[[str], None] | None
    folder: Path | None = None
    redactors: list[Callable[[str], str]] = field(default_factory=list)
    bar: progress.Bar | None = None  # a line on a terminal while pg_dump etc. run
    programs: list[Path] = field(default_factory=list)  # pg_dump etc., once known
    restored: bool = False
    src_conn: psycopg.Connection[Any] | None = None
    tgt_conn: psycopg.Connection[Any] | None = None

    def redact(self, text: str) -> str:
        for r in self.redactors:
            text = r(text)
        return text

    def say(self, line: str) -> None:
        """A progress line; on a terminal the bar names the step instead (a line printed
        under a bar would tear it)."""
        if self.log is not None:
            self.log(line)
        elif not progress.enabled():
            print(f"opsgate refresh: {line}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def timed(self, label: str) -> Iterator[None]:
        """One step: timed into ``timings_s[label]`` and named on the progress bar."""
        if self.bar is not None:
            self.bar.phase(label.replace("_", " "))
        try:
            with self.summary.timed(label):
                yield
        finally:
            if self.bar is not None:
                self.bar.advance()

    def finish(self, status: str, exit_code: int, message: str,
               problems: list[str] | None = None) -> RefreshResult:
        """Ends the summary (its message redacted) and keeps it as the run folder's
        ``summary.json`` (0600) when there is a run folder."""
        s = self.summary.finish(status, exit_code, self.redact(message), problems)
        doc = s.as_json()
        if self.folder is not None:
            out = self.folder / "summary.json"
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(doc, indent=2, default=str) + "\n")
        return RefreshResult(doc, exit_code, s.message, problems or [])

    def stopped(self, stop: Stop) -> RefreshResult:
        return self.finish(stop.status, stop.exit_code, stop.message, stop.problems)


@dataclass(frozen=True)
class _Sides:
    """Both sides as configured: settings, the URLs the refresh connects to, their
    endpoints, and the source's expectations."""

    source: Settings
    target: Settings
    target_env: dict[str, str]
    expectations: Expectations
    src_url: SecretUrl
    ep_src: Endpoint
    ep_given: Endpoint
    tgt_url: SecretUrl
    ep_tgt: Endpoint
    #: Why the target has no session endpoint; raised after the production guard, so a
    #: pooled-only target is refused as production-looking first.
    session_problem: ConfigError | None


@dataclass
class _Source:
    """What the source's one snapshot gave."""

    server: ServerIdentity
    tables: list[str]
    hashes: dict[str, canon.TableHash | None]
    tools: PgBinaries
    exported: archive.Archive | None
    #: canon-v1 combined hash of its tables: the summary's and the ledger's source hash.
    combined: str


def refresh(options: RefreshOptions, *, log: Callable[[str], None] | None = None
            ) -> RefreshResult:
    """Run one refresh; never raises for expected failures (the result says why)."""
    run = _Run(options, RefreshSummary(operation="refresh",
                                       mode="apply" if options.apply else "dry-run"), log)
    try:
        sides = _configure(run)
    except ConfigError as exc:
        return run.finish("failed", EXIT_USAGE, str(exc))
    except OSError as exc:
        return run.finish("failed", EXIT_USAGE, f"the run folder cannot be made: {exc}")
    return _guarded(run, sides)


# -- configuration: exit 2 on anything missing or malformed ------------------------------


def _configure(run: _Run) -> _Sides:
    """Both env files, the source's expectations, both endpoints and (``--apply``) the
    run folder, before anything is reached; a `ConfigError` on anything missing."""
    o, s = run.options, run.summary
    source, _ = load_side(o.source_env_file, "source")
    target, target_env = load_side(o.target_env_file, "target")
    run.redactors += [source.redactor(), target.redactor()]
    exp_file = o.expectations_file or source.expectations_file
    if not exp_file:
        raise ConfigError(f"--source-env-file {o.source_env_file} sets no "
                          "OPSGATE_EXPECTATIONS_FILE (the source's expected production "
                          "markers); set it there or pass --expectations FILE")
    expectations = Expectations.load(exp_file)
    s.expectations = expectations.source
    src_url = source.session_url("the refresh's export of the source")
    ep_src = endpoint_of(src_url, "the source's DATABASE_URL")
    given = target.require_database_url()
    ep_given = endpoint_of(given, "the target's DATABASE_URL")
    s.source = {"env_file": str(o.source_env_file), "database": src_url.masked,
                "name": ep_src.name}
    s.target = {"env_file": str(o.target_env_file), "database": given.masked,
                "name": ep_given.name}
    planned_folder = o.out or default_run_folder()
    if o.apply:
        run.folder = _make_run_folder(planned_folder)
    s.run_folder = str(run.folder or planned_folder)
    session_problem: ConfigError | None = None
    try:
        tgt_url = target.session_url("the refresh's restore into the target")
        ep_tgt = endpoint_of(tgt_url, "the target's direct URL")
    except ConfigError as exc:
        session_problem, tgt_url, ep_tgt = exc, given, ep_given
    s.target.update(database_direct=tgt_url.masked, name=ep_tgt.name)
    return _Sides(source, target, target_env, expectations, src_url, ep_src, ep_given,
                  tgt_url, ep_tgt, session_problem)


# -- the stages ----------------------------------------------------------------------------


def _guarded(run: _Run, sides: _Sides) -> RefreshResult:
    """The stages in the runbook's order; whatever stops them (a `Stop`, a tool or the
    database failing, Ctrl-C or SIGTERM) ends the summary with one line."""
    steps = contextlib.ExitStack()
    try:
        run.bar = steps.enter_context(progress.bar(
            "opsgate refresh", total=8 if run.options.apply else 3, unit="steps"))
        _guard_target(run, sides)
        target_server = _connect(run, sides)
        src = _read_source(run, sides, target_server)
        tgt_archive = _plan(run, sides, src)
        _apply(run, sides, src, target_server)
        mismatched = _verify(run, src)
        return _record(run, sides, src, tgt_archive, mismatched)
    except Stop as stop:
        return run.stopped(stop)
    except (DatabaseUnavailableError, PostgresUnavailableError, ConfigError) as exc:
        return run.finish("failed", EXIT_USAGE, str(exc))
    except OpsgateError as exc:
        return run.finish("failed", EXIT_FAILED, str(exc))
    except psycopg.Error as exc:
        return run.finish("failed", EXIT_FAILED, f"database error: {first_line(exc)[:300]}")
    except KeyboardInterrupt:
        return _interrupted(run, sides)
    finally:
        steps.close()
        for conn in (run.src_conn, run.tgt_conn):
            if conn is not None:
                conn.close()


def _guard_target(run: _Run, sides: _Sides) -> None:
    """Preconditions, before connecting to anything: refuses a production-looking target
    unless ``--approve-target`` names it (the endpoint the restore would write)."""
    approve, target = run.options.approve_target, run.summary.target
    ep_target = sides.ep_tgt
    signs: list[str] = []
    for ep in (sides.ep_given, sides.ep_tgt):
        signs += [s for s in production_signs(ep, sides.target_env,
                                              sides.target.database_url_pooled)
                  if s not in signs]
    target["production_signs"] = signs
    if approve is not None and approve != ep_target.name:
        raise Stop("refused", EXIT_FAILED,
                   f"--approve-target names {approve!r}, but the target is "
                   f"{ep_target.name!r}; nothing was exported and neither database was "
                   "written")
    target["approved"] = approve is not None
    if signs and approve is None:
        raise Stop("refused", EXIT_FAILED,
                   f"the target {ep_target.name} looks like production ("
                   + "; ".join(signs) + "); a refresh overwrites its target. If that is "
                   f"intended, pass --approve-target={ep_target.name}; nothing was "
                   "exported and neither database was written", signs)
    if sides.session_problem is not None:
        raise sides.session_problem


def _connect(run: _Run, sides: _Sides) -> ServerIdentity:
    """Both sides' sessions (kept on the run, closed whatever happens), and who the
    target's server says it is."""
    run.src_conn = db.connect(sides.src_url, redact=run.redact, what="the source")
    run.tgt_conn = db.connect(sides.tgt_url, redact=run.redact, what="the target")
    with db.transaction(run.tgt_conn, read_only=True):
        server = server_identity(run.tgt_conn)
    run.summary.target["server"] = server.as_dict()
    return server


def _source_conn(run: _Run) -> psycopg.Connection[Any]:
    if run.src_conn is None:
        raise RefreshError("the source was read before it was connected to")
    return run.src_conn


def _target_conn(run: _Run) -> psycopg.Connection[Any]:
    if run.tgt_conn is None:
        raise RefreshError("the target was read before it was connected to")
    return run.tgt_conn


def _read_source(run: _Run, sides: _Sides, target_server: ServerIdentity) -> _Source:
    """The source, in one read-only snapshot: the preconditions on it (not the target,
    its markers, its tables), its hashes and (``--apply``) its export of that very
    snapshot; then proof that the snapshot's transaction wrote nothing."""
    conn = _source_conn(run)
    with db.transaction(conn, read_only=True,
                        isolation=psycopg.IsolationLevel.REPEATABLE_READ):
        server, snapshot = _source_preconditions(run, sides, conn, target_server)
        tables = pgrun.contract_tables(conn)
        if not tables:
            raise Stop("refused", EXIT_FAILED, "the source has none of the contract "
                       "tables; nothing to refresh from")
        with run.timed("hash_source"):
            hashes = _hashes(conn, tables)
        tools = _client_tools(run, sides, server, target_server)
        exported = None
        if run.folder is not None:
            run.say(f"exporting the source {sides.ep_src.name} to {run.folder}")
            with run.timed("export_source"):
                exported = archive.export(tools, sides.src_url, run.folder / "source.dump",
                                          "source", run.redact, snapshot)
            run.summary.archives["source"] = exported.as_dict()
        _check_source_read_only(run, conn)
    combined = run.summary.source_hash = _combined(hashes)
    return _Source(server, tables, hashes, tools, exported, combined)


def _source_preconditions(run: _Run, sides: _Sides, conn: psycopg.Connection[Any],
                          target_server: ServerIdentity) -> tuple[ServerIdentity, str]:
    """Refuses a target that is the source, and a source failing its expected markers;
    returns the source's server and the snapshot its export joins."""
    server = server_identity(conn)
    run.summary.source["server"] = server.as_dict()
    same = same_database(server, target_server, sides.ep_src, sides.ep_tgt)
    if same:
        raise Stop("refused", EXIT_FAILED,
                   f"the target is the source ({same}); a refresh never writes its source; "
                   "nothing was exported and neither database was written")
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    if row is None:
        raise RefreshError("the source exported no snapshot; nothing was exported and "
                           "neither database was written")
    with run.timed("source_markers"):
        problems, seen = markers.check(conn, sides.expectations)
    run.summary.source_markers, run.summary.source_seen = problems, seen
    if problems:
        raise Stop("refused", EXIT_FAILED,
                   f"the source fails its expected production markers "
                   f"({sides.expectations.source}): " + "; ".join(problems[:5])
                   + "; nothing was exported and neither database was written", problems)
    return server, str(row[0])


def _client_tools(run: _Run, sides: _Sides, source_server: ServerIdentity,
                  target_server: ServerIdentity) -> PgBinaries:
    """pg_dump, pg_restore and psql fit for both servers; from here on a stop ends the
    sessions they may have opened."""
    major = max(source_server.server_version, target_server.server_version) // 10000
    tools = find_client_tools(
        major, sides.source.pg_bindir or sides.target.pg_bindir,
        tls=url_wants_tls(sides.src_url.reveal()) or url_wants_tls(sides.tgt_url.reveal()))
    run.summary.client_tools = tools.describe()
    run.programs += [tools.tool("pg_dump"), tools.tool("pg_restore"), tools.tool("psql")]
    return tools


def _check_source_read_only(run: _Run, conn: psycopg.Connection[Any]) -> None:
    """The source's transaction was read only and wrote no row: shown in the summary,
    and a stop before the target is touched if not."""
    ro = conn.execute("SELECT current_setting('transaction_read_only')").fetchone()
    read_only = bool(ro and ro[0] == "on")
    writes = _writes_in_transaction(conn)
    run.summary.source_read_only = {
        "transactions": "READ ONLY" if read_only else "NOT READ ONLY",
        "export_session": "default_transaction_read_only=on",
        "rows_written": writes}
    if not read_only or writes:
        raise RefreshError("the source transaction was not read only; stopped "
                           "before the target was touched")


def _plan(run: _Run, sides: _Sides, src: _Source) -> archive.Archive | None:
    """The target as it is: exported (``--apply``) before anything changes it, hashed,
    and compared table by table with the source; a dry run stops here. Returns the
    target's export (the way back)."""
    s, conn = run.summary, _target_conn(run)
    exported = None
    if run.folder is not None:
        run.say(f"exporting the target {sides.ep_tgt.name} to {run.folder}")
        with run.timed("export_target"):
            exported = archive.export(src.tools, sides.tgt_url,
                                      run.folder / "target-before.dump", "target", run.redact)
        s.archives["target_before"] = exported.as_dict()
    with db.transaction(conn, read_only=True), run.timed("hash_target_before"):
        before = _hashes(conn, src.tables)
    for t in src.tables:
        sh, bh = src.hashes[t], before[t]
        if sh is None:
            raise RefreshError(f"the source's table {t} was not hashed; nothing was written")
        s.tables.append({"table": t, "source_rows": sh.rows, "source_sha256": sh.sha256,
                         "target_rows_before": bh.rows if bh else None,
                         "target_sha256_before": bh.sha256 if bh else None})
    if not run.options.apply:
        blockers = s.apply_blockers
        raise Stop("planned", EXIT_OK,
                   "dry run: every guard passed and the source's markers hold; nothing "
                   "was written anywhere (no export, no file, no database write); "
                   f"--apply exports both databases to {s.run_folder} first"
                   + (f"; --apply would fail: {blockers[0]}" if blockers else
                      "; run again with --apply to replace the target's tables with "
                      "the source's"))
    if s.apply_blockers:
        raise Stop("refused", EXIT_FAILED, s.apply_blockers[0])
    return exported


def _apply(run: _Run, sides: _Sides, src: _Source, target_server: ServerIdentity) -> None:
    """The restore of the source's export: one transaction, all or nothing."""
    if src.exported is None:
        raise RefreshError("the source was not exported; nothing was restored")
    run.say(f"restoring the source's export into {sides.ep_tgt.name} (one transaction)")
    with run.timed("restore"):
        run.summary.restore_method = archive.restore(
            src.tools, src.exported, sides.tgt_url, target_server.server_version // 10000,
            run.redact)
    run.restored = True


def _verify(run: _Run, src: _Source) -> list[str]:
    """Proof: every table's canon-v1 hash in the target against the source's. Returns
    the tables that differ, one line each."""
    s, conn = run.summary, _target_conn(run)
    with db.transaction(conn, read_only=True), run.timed("hash_target_after"):
        after = _hashes(conn, src.tables)
    mismatched = []
    for row in s.tables:
        ah = after[row["table"]]
        row["target_rows_after"] = ah.rows if ah else None
        row["target_sha256_after"] = ah.sha256 if ah else None
        row["match"] = row["target_sha256_after"] == row["source_sha256"]
        if not row["match"]:
            mismatched.append(
                f"{row['table']}: source {row['source_rows']} rows "
                f"{row['source_sha256'][:12]}…, target {row['target_rows_after']} rows "
                f"{(row['target_sha256_after'] or 'missing')[:12]}…")
    s.target_hash_after = _combined(after)
    return mismatched


def _record(run: _Run, sides: _Sides, src: _Source, tgt_archive: archive.Archive | None,
            mismatched: list[str]) -> RefreshResult:
    """The target's ledger row (``applied`` or ``verify-failed``), then the outcome."""
    s = run.summary
    if src.exported is None or tgt_archive is None:
        raise RefreshError("the target was restored without both exports; not recorded")
    try:
        with run.timed("record"):
            _ledger_row(run, sides, src, src.exported, tgt_archive,
                        "verify-failed" if mismatched else "applied")
    except psycopg.Error as exc:
        raise RefreshError(
            f"the target was restored (tables {'differ' if mismatched else 'equal'}), "
            f"but its ledger row could not be written: {first_line(exc)[:300]}") from None
    if mismatched:
        raise Stop("verify-failed", EXIT_FAILED,
                   f"restored, but {len(mismatched)} table(s) differ from the source: "
                   + "; ".join(mismatched[:5]) + f"; recorded as ledger row {s.ledger_id} "
                   f"(verify-failed); the target's export before the refresh is "
                   f"{tgt_archive.path}", mismatched)
    return run.finish("applied", EXIT_OK,
                      f"{sides.ep_tgt.name} now holds the source's tables (canon-v1 hashes "
                      f"equal for {len(s.tables)} tables), ledger row {s.ledger_id}; exports "
                      f"in {run.folder}")


def _ledger_row(run: _Run, sides: _Sides, src: _Source, src_archive: archive.Archive,
                tgt_archive: archive.Archive, status: str) -> None:
    """What was restored from where, and both exports' hashes (the way back is the
    target's export)."""
    s, conn, rows = run.summary, _target_conn(run), run.summary.tables
    approved = run.options.approve_target is not None
    with db.transaction(conn, read_only=False):
        ledger.ensure_ledger(conn)
        s.ledger_id = ledger.append(
            conn, name=ledger.REFRESH, mode="apply", status=status,
            payload_hash=src.combined, script_checksum=None,
            source_counts={r["table"]: r["source_rows"] for r in rows},
            target_counts={
                "before": {r["table"]: r["target_rows_before"] for r in rows},
                "after": {r["table"]: r["target_rows_after"] for r in rows},
                "archives": {"source_sha256": src_archive.sha256,
                             "target_before_sha256": tgt_archive.sha256}},
            reason=(f"refresh from {sides.ep_src.name}"
                    + (" (target approved by --approve-target)" if approved else "")),
            applied_by=f"{getpass.getuser()}@{socket.gethostname()}",
            started_at=s.started)


# -- after a stop (SIGINT, SIGTERM) --------------------------------------------------------

#: The refresh's own pg_dump/pg_restore sessions (archive sets PGAPPNAME to this).
_TOOL_APP = archive.REFRESH_APP_NAME
#: Seconds to reach a side when ending its sessions after a stop.
_STOP_CONNECT_TIMEOUT_S = 2


def _interrupted(run: _Run, sides: _Sides) -> RefreshResult:
    """Stopped by SIGINT or SIGTERM: undo what is half-done, and say whether the target
    was changed."""
    left = _after_a_stop(run.folder, run.summary,
                         [(sides.src_url, "source"), (sides.tgt_url, "target")],
                         run.summary.started, run.redact, run.programs)
    state = ("the target was restored but neither verified nor recorded" if run.restored
             else "the target was not changed (its restore is one transaction)")
    return run.finish("failed", EXIT_INTERRUPTED,
                      f"interrupted by {interrupts.received() or 'SIGINT'}; {state}" + left)


def _end_children(programs: list[Path]) -> None:
    """Kill and reap any child still running one of ``programs``. subprocess.run kills
    its child when interrupted, but a stop landing between the child's exec and
    Popen's return (the child already is pg_dump) leaves no Popen to kill it: that
    pg_dump would finish on its own and write its export after the partial one was
    deleted."""
    for pid in children_running(programs):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _after_a_stop(folder: Path | None, summary: RefreshSummary,
                  sides: list[tuple[SecretUrl, str]], started: datetime,
                  redact: Callable[[str], str], programs: list[Path]) -> str:
    """Undo what a stop leaves half-done: an export pg_dump did not finish (a partial
    copy of a database's rows, no use to anyone), and the refresh's server sessions a
    killed pg_dump or pg_restore leaves running (pg_restore's holds the target's tables
    locked until its statement ends). Returns what could not be undone, as a clause."""
    _end_children(programs)
    problems: list[str] = []
    if folder is not None:
        kept = {str(a["path"]) for a in summary.archives.values()}
        for dump in folder.glob("*.dump"):
            if str(dump) not in kept:
                try:
                    dump.unlink()
                except OSError as exc:
                    problems.append(f"the partial export {dump} could not be removed: {exc}")
    if summary.client_tools is None:
        sides = []  # stopped before any pg_dump or pg_restore could run
    for url, label in sides:
        try:
            # Briefly: this runs inside CI's grace before SIGKILL.
            with db.connect(url, redact=redact, what=f"the {label}",
                            connect_timeout=_STOP_CONNECT_TIMEOUT_S) as conn:
                _end_sessions(conn, started)
        except (DatabaseUnavailableError, psycopg.Error) as exc:
            problems.append(f"the {label}'s refresh sessions could not be ended: "
                            f"{redact(first_line(exc))[:200]}")
    return "".join(f"; {p}" for p in problems)


def _end_sessions(conn: psycopg.Connection[Any], started: datetime) -> None:
    """Terminates this user's refresh tool sessions begun since ``started``, and waits
    (briefly) until they are gone, so the target's locks are free when the command has
    exited."""
    # In the select list, so it runs only for the rows the WHERE keeps.
    pids = [r[1] for r in conn.execute(
        "SELECT pg_terminate_backend(pid), pid FROM pg_stat_activity WHERE "
        "application_name = %s AND usename = current_user AND "
        "backend_start >= %s AND pid <> pg_backend_pid()", (_TOOL_APP, started))]
    # Terminating only signals them: wait until they are gone.
    deadline = time.monotonic() + 1.0
    while pids and time.monotonic() < deadline and conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchone():
        time.sleep(0.02)
