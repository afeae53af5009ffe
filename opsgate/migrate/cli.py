"""``opsgate-migrate`` / ``python -m opsgate.migrate`` / ``opsgate migrate``.

stdout carries exactly one JSON document (the summary); progress and the one-line
outcome go to stderr, also when the run never started (an unknown name, a badly named
file in the folder, a script that fails to import). Exit codes (`opsgate.operation`): 0
success (applied, planned, no-op), 1 the migration failed or was refused, 2 usage or
configuration error (bad name, bad script, missing variable, unreachable database).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

from opsgate import interrupts
from opsgate.clients import db
from opsgate.config import Settings
from opsgate.errors import ConfigError, DatabaseUnavailableError, OpsgateError, first_line
from opsgate.migrate import ledger
from opsgate.migrate.runner import RunResult, mode_of, run_migration, unstarted
from opsgate.migrate.scripts import discover_scripts, find_script
from opsgate.operation import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from opsgate.pipes import reader_went_away


def build_parser(prog: str = "opsgate-migrate") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run data migrations under the "
                                "runbook's safeguards (dry-run unless --apply).")
    add_arguments(p)
    return p


def seconds(text: str) -> float:
    """A number of seconds: finite and not negative (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def _common(p: argparse.ArgumentParser, default: Any) -> None:
    """The options every migrate command takes, accepted before or after the command:
    after it they default to SUPPRESS, so a value given before is kept."""
    p.add_argument("--env-file", metavar="PATH", default=default,
                   help="dotenv file with DATABASE_URL etc.")
    p.add_argument("--migrations-dir", metavar="DIR", default=default,
                   help="folder of migration scripts (default: OPSGATE_MIGRATIONS_DIR, "
                   "else ./scripts/migrations or ./migrations if it holds migration "
                   "scripts, else the runbook's, shipped with opsgate)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    _common(p, None)
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="the migration scripts, in order")
    ls.add_argument("--json", action="store_true", help="JSON for scripts (default: a table)")
    status = sub.add_parser("status", help="each script against the ledger (exit 1 on drift)")
    status.add_argument("--json", action="store_true",
                        help="JSON for scripts (default: a table)")
    run = sub.add_parser("run", help="run one migration (dry run unless --apply); stdout "
                         "is its JSON summary")
    run.add_argument("name")
    run.add_argument("--apply", action="store_true", help="write (default: dry run)")
    run.add_argument("--force", action="store_true",
                     help="apply again although applied with another payload hash")
    run.add_argument("--reason", help="why a forced run is needed (stored in the ledger)")
    run.add_argument("--source", metavar="PATH",
                     help="read the migration's source from this file or folder")
    run.add_argument("--lock-timeout", type=seconds, default=30.0, metavar="SECONDS",
                     help="how long to wait for another runner of the same migration")
    run.add_argument("--statement-timeout", type=seconds, default=None, metavar="SECONDS",
                     help="cancel any statement running longer (default: "
                     "OPSGATE_STATEMENT_TIMEOUT, else the server's own setting)")


    for command in (ls, status, run):
        _common(command, argparse.SUPPRESS)


def _emit(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    print(f"opsgate-migrate: {line}", file=sys.stderr, flush=True)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    scripts = discover_scripts(settings.migrations_dir)
    url = settings.require_database_url()
    try:
        with db.connect(url, redact=settings.redactor()) as conn, \
                db.transaction(conn, read_only=True, application_name="opsgate-migrate status"):
            all_rows = ledger.rows(conn)
    except DatabaseUnavailableError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except psycopg.Error as exc:
        _err(f"reading the ledger on {url.masked} failed: "
             f"{settings.redactor()(first_line(exc))[:300]}")
        return EXIT_FAILED
    known = {s.name for s in scripts}
    report = []
    drift = False
    for s in scripts:
        applied = [r for r in all_rows if r["name"] == s.name and r["status"] == "applied"]
        last = applied[-1] if applied else None
        if last is None:
            state = "pending"
        elif last["script_checksum"] != s.checksum:
            state, drift = "edited-after-apply", True
        else:
            state = "applied"
        report.append({"name": s.name, "state": state, "checksum": s.checksum,
                       "ledger_id": last["id"] if last else None,
                       "payload_hash": last["payload_hash"] if last else None,
                       "applied_checksum": last["script_checksum"] if last else None,
                       "applies": len(applied)})
    # Rows of opsgate's own operations (a refresh): not scripts, but part of the
    # database's history an operator should see.
    operations = [{"name": r["name"], "ledger_id": r["id"], "status": r["status"],
                   "payload_hash": r["payload_hash"], "reason": r["reason"]}
                  for r in all_rows if r["name"] in ledger.OPERATIONS]
    unknown = sorted({r["name"] for r in all_rows} - known - ledger.OPERATIONS)
    failed = [r["id"] for r in all_rows if r["status"] != "applied"]
    drift = drift or bool(unknown) or bool(failed)
    doc = {"migrations": report, "operations": operations, "unknown_in_ledger": unknown,
           "non_applied_rows": failed, "target_database": url.masked,
           "migrations_dir": settings.migrations_dir}
    if args.json:
        _emit(doc)
    else:
        _table(["state", "migration", "ledger row", "payload hash"],
               [[str(r["state"]), str(r["name"]), str(r["ledger_id"] or "-"),
                 str(r["payload_hash"] or "-")[:12]] for r in report]
               + [[f"operation {o['status']}", str(o["name"]), str(o["ledger_id"]),
                   str(o["payload_hash"] or "-")[:12]] for o in operations])
        print(f"target: {url.masked}")
        print(f"migrations: {settings.migrations_dir}")
    if unknown:
        _err(f"ledger names unknown migrations: {', '.join(unknown)}")
    if failed:
        _err(f"ledger rows not applied: {', '.join(map(str, failed))}")
    return EXIT_FAILED if drift else EXIT_OK


def _table(header: list[str], rows: list[list[str]]) -> None:
    """A plain aligned table on stdout, for people (``--json`` is for scripts)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for line in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=False)).rstrip())


def main(argv: Sequence[str] | None = None, prog: str = "opsgate-migrate") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return dispatch(args)
    except KeyboardInterrupt:  # stopped outside `run` (which answers with its summary)
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return reader_went_away()


def dispatch(args: argparse.Namespace) -> int:
    """SIGTERM stops a command as SIGINT does: a migration stopped mid-apply rolls back
    (its running statement cancelled) and still prints its summary, exit 130."""
    with interrupts.stop_on_signals():
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    settings: Settings | None = None
    try:
        settings = Settings.load(env_file=args.env_file)
        if args.migrations_dir is not None:  # the option wins over the variable
            settings = replace(settings, migrations_dir=args.migrations_dir)
        if args.command == "list":
            _list(args, settings)
            return EXIT_OK
        if args.command == "status":
            return _status(args, settings)
        script = find_script(settings.migrations_dir, args.name)
    except OpsgateError as exc:
        code = EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
        if args.command != "run":
            _err(str(exc))
            return code
        # `run` answers with its summary whatever happens, a run that never started too.
        folder = settings.migrations_dir if settings else args.migrations_dir
        return _report(unstarted(args.name, folder, mode_of(args.apply, args.force),
                                 args.reason, code, str(exc)))
    return _report(run_migration(script, settings, apply=args.apply, force=args.force,
                                 reason=args.reason, source=args.source,
                                 lock_timeout=args.lock_timeout,
                                 statement_timeout=args.statement_timeout))


def _list(args: argparse.Namespace, settings: Settings) -> None:
    scripts = discover_scripts(settings.migrations_dir)
    if args.json:
        _emit([{"name": s.name, "source": s.source, "target": s.target,
                "checksum": s.checksum, "path": str(Path(s.path))} for s in scripts])
    else:
        _table(["migration", "from", "to", "checksum"],
               [[s.name, s.source, s.target, s.checksum[:12]] for s in scripts])


def _report(result: RunResult) -> int:
    """The one JSON summary on stdout, the one-line outcome on stderr."""
    _emit(result.summary)
    _err(f"{result.summary['status']}: {result.message}")
    return result.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
