"""One refresh, step by step: guard, export both, verify the source, then (``--apply``)
restore the source's export into the target, prove it with canon-v1 table hashes and
record it in the target's ledger.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from opsgate import interrupts, progress
from opsgate.children import children_running
from opsgate.config import Settings, read_env_file
from opsgate.errors import (
    ConfigError,
    DatabaseUnavailableError,
    OpsgateError,
    PostgresUnavailableError,
    first_line,
)
from opsgate.migrate import ledger
from opsgate.operation import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from opsgate.refresh import archive, markers
from opsgate.refresh.errors import RefreshError
from opsgate.refresh.identity import (
    Endpoint,
    endpoint_of,
    production_signs,
    same_database,
    server_identity,
)
from opsgate.sensitive import SecretUrl
from opsgate.target import db, pgrun
from opsgate.target.pgtools import find_client_tools, url_wants_tls
from opsgate.verify import canon
from opsgate.verify.expectations import Expectations

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
    summary: dict[str, Any]
    exit_code: int
    message: str
    problems: list[str] = field(default_factory=list)


class _Stop(Exception):
    def __init__(self, status: str, code: int, message: str,
                 problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.problems = problems or []


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def _writes_in_transaction(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
                       "FROM pg_stat_xact_user_tables").fetchone()
    return int(row[0]) if row else 0


def _check_guards(endpoints: list[Endpoint], target_env: dict[str, str], target: Settings,
                  approve: str | None, summary: dict[str, Any]) -> None:
    """Refuses a production-looking target unless ``--approve-target`` names it (the
    endpoint the restore would write, the last of ``endpoints``)."""
    ep_target = endpoints[-1]
    signs: list[str] = []
    for ep in endpoints:
        signs += [s for s in production_signs(ep, target_env, target.database_url_pooled)
                  if s not in signs]
    summary["target"]["production_signs"] = signs
    if approve is not None and approve != ep_target.name:
        raise _Stop("refused", EXIT_FAILED,
                    f"--approve-target names {approve!r}, but the target is "
                    f"{ep_target.name!r}; nothing was exported and neither database was written")
    summary["target"]["approved"] = approve is not None
    if signs and approve is None:
        raise _Stop("refused", EXIT_FAILED,
                    f"the target {ep_target.name} looks like production ("
                    + "; ".join(signs) + "); a refresh overwrites its target. If that is "
                    f"intended, pass --approve-target={ep_target.name}; nothing was "
                    "exported and neither database was written", signs)


def _record(conn: psycopg.Connection[Any], summary: dict[str, Any], status: str,
            rows: list[dict[str, Any]], src_archive: archive.Archive,
            tgt_archive: archive.Archive, source_name: str, approved: bool,
            started: datetime) -> None:
    """The target's ledger row: what was restored from where, and both exports' hashes
    (the way back is the target's export)."""
    with db.transaction(conn, read_only=False):
        ledger.ensure_ledger(conn)
        summary["ledger_id"] = ledger.append(
            conn, name=ledger.REFRESH, mode="apply", status=status,
            payload_hash=summary["source_hash"], script_checksum=None,
            source_counts={r["table"]: r["source_rows"] for r in rows},
            target_counts={
                "before": {r["table"]: r["target_rows_before"] for r in rows},
                "after": {r["table"]: r["target_rows_after"] for r in rows},
                "archives": {"source_sha256": src_archive.sha256,
                             "target_before_sha256": tgt_archive.sha256}},
            reason=(f"refresh from {source_name}"
                    + (" (target approved by --approve-target)" if approved else "")),
            applied_by=f"{getpass.getuser()}@{socket.gethostname()}",
            started_at=started)


#: The refresh's own pg_dump/pg_restore sessions (archive sets PGAPPNAME to this).
_TOOL_APP = archive.REFRESH_APP_NAME
#: Seconds to reach a side when ending its sessions after a stop.
_STOP_CONNECT_TIMEOUT_S = 2


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


def _after_a_stop(folder: Path | None, summary: dict[str, Any],
                  sides: list[tuple[SecretUrl, str]], started: datetime,
                  redact: Callable[[str], str], programs: list[Path]) -> str:
    """Undo what a stop leaves half-done: an export pg_dump did not finish (a partial
    copy of a database's rows, no use to anyone), and the refresh's server sessions a
    killed pg_dump or pg_restore leaves running (pg_restore's holds the target's tables
    locked until its statement ends). Returns what could not be undone, as a clause."""
    _end_children(programs)
    problems: list[str] = []
    if folder is not None:
        kept = {str(a["path"]) for a in summary["archives"].values()}
        for dump in folder.glob("*.dump"):
            if str(dump) not in kept:
                try:
                    dump.unlink()
                except OSError as exc:
                    problems.append(f"the partial export {dump} could not be removed: {exc}")
    if "client_tools" not in summary:
        sides = []  # stopped before any pg_dump or pg_restore could run
    for url, label in sides:
        try:
            # Briefly: this runs inside CI's grace before SIGKILL.
            with db.connect(url, redact=redact, what=f"the {label}",
                            connect_timeout=_STOP_CONNECT_TIMEOUT_S) as conn:
                # In the select list, so it runs only for the rows the WHERE keeps.
                pids = [r[1] for r in conn.execute(
                    "SELECT pg_terminate_backend(pid), pid FROM pg_stat_activity WHERE "
                    "application_name = %s AND usename = current_user AND "
                    "backend_start >= %s AND pid <> pg_backend_pid()", (_TOOL_APP, started))]
                # Terminating only signals them: wait (briefly) until they are gone, so
                # the target's locks are free when the command has exited.
                deadline = time.monotonic() + 1.0
                while pids and time.monotonic() < deadline and conn.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)",
                        (pids,)).fetchone():
                    time.sleep(0.02)
        except (DatabaseUnavailableError, psycopg.Error) as exc:
            problems.append(f"the {label}'s refresh sessions could not be ended: "
                            f"{redact(first_line(exc))[:200]}")
    return "".join(f"; {p}" for p in problems)


def refresh(options: RefreshOptions, *, log: Callable[[str], None] | None = None
            ) -> RefreshResult:
    """Run one refresh; never raises for expected failures (the result says why)."""
    started = datetime.now(UTC)
    t0 = time.monotonic()
    def say(line: str) -> None:
        """A progress line; on a terminal the bar names the step instead (a line printed
        under a bar would tear it)."""
        if log is not None:
            log(line)
        elif not progress.enabled():
            print(f"opsgate refresh: {line}", file=sys.stderr, flush=True)

    mode = "apply" if options.apply else "dry-run"
    summary: dict[str, Any] = {
        "operation": "refresh", "mode": mode, "status": "failed",
        "source": {}, "target": {}, "run_folder": None, "archives": {},
        "expectations": None, "source_markers": [], "source_read_only": None,
        "tables": [], "source_hash": None, "hash_version": canon.VERSION,
        "target_hash_after": None, "apply_blockers": [], "restore_method": None,
        "ledger_id": None,
        "started_at": _iso(started), "finished_at": None, "duration_s": None,
        "timings_s": {}, "message": "",
    }
    folder: Path | None = None
    redactors: list[Callable[[str], str]] = []

    def redact(text: str) -> str:
        for r in redactors:
            text = r(text)
        return text

    def finish(status: str, code: int, message: str, problems: list[str] | None = None
               ) -> RefreshResult:
        summary.update(status=status, message=redact(message), exit_code=code,
                       finished_at=_iso(datetime.now(UTC)),
                       duration_s=round(time.monotonic() - t0, 3))
        if folder is not None:
            out = folder / "summary.json"
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(summary, indent=2, default=str) + "\n")
        return RefreshResult(summary, code, summary["message"], problems or [])

    steps = contextlib.ExitStack()
    bar: progress.Bar | None = None  # a line on a terminal while pg_dump etc. run

    def timed(label: str, fn: Callable[..., Any], *args: Any) -> Any:
        s = time.monotonic()
        if bar is not None:
            bar.phase(label.replace("_", " "))
        try:
            return fn(*args)
        finally:
            summary["timings_s"][label] = round(time.monotonic() - s, 3)
            if bar is not None:
                bar.advance()

    # -- configuration: exit 2 on anything missing or malformed ------------------------
    try:
        source, _ = load_side(options.source_env_file, "source")
        target, target_env = load_side(options.target_env_file, "target")
        redactors += [source.redactor(), target.redactor()]
        exp_file = options.expectations_file or source.expectations_file
        if not exp_file:
            raise ConfigError(f"--source-env-file {options.source_env_file} sets no "
                              "OPSGATE_EXPECTATIONS_FILE (the source's expected production "
                              "markers); set it there or pass --expectations FILE")
        expectations = Expectations.load(exp_file)
        summary["expectations"] = expectations.source
        src_url = source.session_url("the refresh's export of the source")
        ep_src = endpoint_of(src_url, "the source's DATABASE_URL")
        given = target.require_database_url()
        ep_given = endpoint_of(given, "the target's DATABASE_URL")
        summary["source"] = {"env_file": str(options.source_env_file),
                             "database": src_url.masked, "name": ep_src.name}
        summary["target"] = {"env_file": str(options.target_env_file),
                             "database": given.masked, "name": ep_given.name}
        planned_folder = options.out or default_run_folder()
        if options.apply:
            folder = _make_run_folder(planned_folder)
        summary["run_folder"] = str(folder or planned_folder)
        # A pooled-only target is refused as production-looking below, before its lack
        # of a direct endpoint is reported.
        session_problem: ConfigError | None = None
        try:
            tgt_url = target.session_url("the refresh's restore into the target")
            ep_tgt = endpoint_of(tgt_url, "the target's direct URL")
        except ConfigError as exc:
            session_problem, tgt_url, ep_tgt = exc, given, ep_given
        summary["target"].update(database_direct=tgt_url.masked, name=ep_tgt.name)
    except ConfigError as exc:
        return finish("failed", EXIT_USAGE, str(exc))
    except OSError as exc:
        return finish("failed", EXIT_USAGE, f"the run folder cannot be made: {exc}")

    src_conn = tgt_conn = None
    restored = False
    programs: list[Path] = []  # pg_dump and pg_restore, once they are known
    try:
        bar = steps.enter_context(progress.bar(
            "opsgate refresh", total=8 if options.apply else 3, unit="steps"))
        _check_guards([ep_given, ep_tgt], target_env, target, options.approve_target,
                      summary)
        if session_problem is not None:
            raise session_problem
        src_conn = db.connect(src_url, redact=redact, what="the source")
        tgt_conn = db.connect(tgt_url, redact=redact, what="the target")
        with db.transaction(tgt_conn, read_only=True):
            tgt_id = server_identity(tgt_conn)
        summary["target"]["server"] = tgt_id.as_dict()

        # -- the source: one read-only snapshot for identity, markers, hashes, export --
        with db.transaction(src_conn, read_only=True,
                            isolation=psycopg.IsolationLevel.REPEATABLE_READ):
            src_id = server_identity(src_conn)
            summary["source"]["server"] = src_id.as_dict()
            same = same_database(src_id, tgt_id, ep_src, ep_tgt)
            if same:
                raise _Stop("refused", EXIT_FAILED,
                            f"the target is the source ({same}); a refresh never writes "
                            "its source; nothing was exported and neither database was written")
            snapshot = src_conn.execute("SELECT pg_export_snapshot()").fetchone()
            assert snapshot is not None
            problems, seen = timed("source_markers", markers.check, src_conn, expectations)
            summary["source_markers"] = problems
            summary["source_seen"] = seen
            if problems:
                raise _Stop("refused", EXIT_FAILED,
                            f"the source fails its expected production markers "
                            f"({expectations.source}): " + "; ".join(problems[:5])
                            + "; nothing was exported and neither database was written", problems)
            tables = pgrun.contract_tables(src_conn)
            if not tables:
                raise _Stop("refused", EXIT_FAILED, "the source has none of the contract "
                            "tables; nothing to refresh from")
            src_hashes = timed("hash_source", _hashes, src_conn, tables)
            major = max(src_id.server_version, tgt_id.server_version) // 10000
            tools = find_client_tools(
                major, source.pg_bindir or target.pg_bindir,
                tls=url_wants_tls(src_url.reveal()) or url_wants_tls(tgt_url.reveal()))
            summary["client_tools"] = tools.describe()
            programs += [tools.tool("pg_dump"), tools.tool("pg_restore"), tools.tool("psql")]
            if folder is not None:
                say(f"exporting the source {ep_src.name} to {folder}")
                src_archive = timed("export_source", archive.export, tools, src_url,
                                    folder / "source.dump", "source", redact,
                                    str(snapshot[0]))
                summary["archives"]["source"] = src_archive.as_dict()
            ro = src_conn.execute("SELECT current_setting('transaction_read_only')").fetchone()
            writes = _writes_in_transaction(src_conn)
            summary["source_read_only"] = {
                "transactions": "READ ONLY" if ro and ro[0] == "on" else "NOT READ ONLY",
                "export_session": "default_transaction_read_only=on",
                "rows_written": writes}
            if not (ro and ro[0] == "on") or writes:
                raise RefreshError("the source transaction was not read only; stopped "
                                   "before the target was touched")
        summary["source_hash"] = canon.combined_hash(
            {t: h.sha256 if h else None for t, h in src_hashes.items()})

        # -- the target: export it before anything changes it --------------------------
        if folder is not None:
            say(f"exporting the target {ep_tgt.name} to {folder}")
            tgt_archive = timed("export_target", archive.export, tools, tgt_url,
                                folder / "target-before.dump", "target", redact)
            summary["archives"]["target_before"] = tgt_archive.as_dict()
        with db.transaction(tgt_conn, read_only=True):
            before = timed("hash_target_before", _hashes, tgt_conn, tables)
        rows = summary["tables"]
        for t in tables:
            sh, bh = src_hashes[t], before[t]
            assert sh is not None
            rows.append({"table": t, "source_rows": sh.rows, "source_sha256": sh.sha256,
                         "target_rows_before": bh.rows if bh else None,
                         "target_sha256_before": bh.sha256 if bh else None})
        if not options.apply:
            blockers = summary["apply_blockers"]
            raise _Stop("planned", EXIT_OK,
                        "dry run: every guard passed and the source's markers hold; nothing "
                        "was written anywhere (no export, no file, no database write); "
                        f"--apply exports both databases to {summary['run_folder']} first"
                        + (f"; --apply would fail: {blockers[0]}" if blockers else
                           "; run again with --apply to replace the target's tables with "
                           "the source's"))
        if summary["apply_blockers"]:
            raise _Stop("refused", EXIT_FAILED, summary["apply_blockers"][0])

        # -- apply: restore, prove, record ------------------------------------------
        say(f"restoring the source's export into {ep_tgt.name} (one transaction)")
        summary["restore_method"] = timed("restore", archive.restore, tools, src_archive,
                                          tgt_url, tgt_id.server_version // 10000, redact)
        restored = True
        with db.transaction(tgt_conn, read_only=True):
            after = timed("hash_target_after", _hashes, tgt_conn, tables)
        mismatched = []
        for row in rows:
            ah = after[row["table"]]
            row["target_rows_after"] = ah.rows if ah else None
            row["target_sha256_after"] = ah.sha256 if ah else None
            row["match"] = row["target_sha256_after"] == row["source_sha256"]
            if not row["match"]:
                mismatched.append(
                    f"{row['table']}: source {row['source_rows']} rows "
                    f"{row['source_sha256'][:12]}…, target {row['target_rows_after']} rows "
                    f"{(row['target_sha256_after'] or 'missing')[:12]}…")
        summary["target_hash_after"] = canon.combined_hash(
            {t: h.sha256 if h else None for t, h in after.items()})
        status = "verify-failed" if mismatched else "applied"
        try:
            timed("record", _record, tgt_conn, summary, status, rows, src_archive,
                  tgt_archive, ep_src.name, options.approve_target is not None, started)
        except psycopg.Error as exc:
            raise RefreshError(
                f"the target was restored (tables {'differ' if mismatched else 'equal'}), "
                f"but its ledger row could not be written: {first_line(exc)[:300]}") from None
        if mismatched:
            raise _Stop("verify-failed", EXIT_FAILED,
                        f"restored, but {len(mismatched)} table(s) differ from the source: "
                        + "; ".join(mismatched[:5]) + f"; recorded as ledger row "
                        f"{summary['ledger_id']} (verify-failed); the target's export before "
                        f"the refresh is {tgt_archive.path}", mismatched)
        return finish("applied", EXIT_OK,
                      f"{ep_tgt.name} now holds the source's tables (canon-v1 hashes equal "
                      f"for {len(rows)} tables), ledger row {summary['ledger_id']}; exports "
                      f"in {folder}")
    except _Stop as stop:
        return finish(stop.status, stop.code, stop.message, stop.problems)
    except (DatabaseUnavailableError, PostgresUnavailableError, ConfigError) as exc:
        return finish("failed", EXIT_USAGE, str(exc))
    except OpsgateError as exc:
        return finish("failed", EXIT_FAILED, str(exc))
    except psycopg.Error as exc:
        return finish("failed", EXIT_FAILED, f"database error: {first_line(exc)[:300]}")
    except KeyboardInterrupt:
        left = _after_a_stop(folder, summary, [(src_url, "source"), (tgt_url, "target")],
                             started, redact, programs)
        state = ("the target was restored but neither verified nor recorded" if restored
                 else "the target was not changed (its restore is one transaction)")
        return finish("failed", EXIT_INTERRUPTED,
                      f"interrupted by {interrupts.received() or 'SIGINT'}; {state}" + left)
    finally:
        steps.close()
        for conn in (src_conn, tgt_conn):
            if conn is not None:
                conn.close()

