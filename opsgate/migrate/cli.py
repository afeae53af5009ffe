"""``opsgate-migrate`` / ``python -m opsgate.migrate`` / ``opsgate migrate``.

stdout carries exactly one JSON document (the summary); progress and the one-line
outcome go to stderr. Exit codes: 0 success (applied, planned, no-op), 1 the migration
failed or was refused, 2 usage or configuration error (bad name, missing variable,
unreachable database).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from .. import db, resources
from ..config import Settings
from ..errors import ConfigError, DatabaseUnavailableError, OpsgateError, first_line
from . import ledger
from .runner import EXIT_FAILED, EXIT_OK, EXIT_USAGE, run_migration
from .scripts import discover_scripts, find_script

#: The runbook's migrations, shipped with opsgate (OPSGATE_MIGRATIONS_DIR overrides).
DEFAULT_DIR = str(resources.migrations_dir())


def build_parser(prog: str = "opsgate-migrate") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run data migrations under the "
                                "runbook's safeguards (dry-run unless --apply).")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env-file", metavar="PATH", help="dotenv file with DATABASE_URL etc.")
    p.add_argument("--migrations-dir", metavar="DIR",
                   default=os.environ.get("OPSGATE_MIGRATIONS_DIR", DEFAULT_DIR),
                   help="folder of migration scripts (default: the runbook's, shipped "
                   "with opsgate)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the migration scripts, in order")
    sub.add_parser("status", help="each script against the ledger (exit 1 on drift)")
    run = sub.add_parser("run", help="run one migration (dry run unless --apply)")
    run.add_argument("name")
    run.add_argument("--apply", action="store_true", help="write (default: dry run)")
    run.add_argument("--force", action="store_true",
                     help="apply again although applied with another payload hash")
    run.add_argument("--reason", help="why a forced run is needed (stored in the ledger)")
    run.add_argument("--source", metavar="PATH",
                     help="read the migration's source from this file or folder")
    run.add_argument("--lock-timeout", type=float, default=30.0, metavar="SECONDS",
                     help="how long to wait for another runner of the same migration")
    run.add_argument("--statement-timeout", type=float, default=None, metavar="SECONDS",
                     help="cancel any statement running longer (default: "
                     "OPSGATE_STATEMENT_TIMEOUT, else the server's own setting)")


def _emit(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    print(f"opsgate-migrate: {line}", file=sys.stderr, flush=True)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    scripts = discover_scripts(args.migrations_dir)
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
    unknown = sorted({r["name"] for r in all_rows} - known)
    failed = [r["id"] for r in all_rows if r["status"] != "applied"]
    drift = drift or bool(unknown) or bool(failed)
    _emit({"migrations": report, "unknown_in_ledger": unknown, "non_applied_rows": failed,
           "target_database": url.masked})
    for r in report:
        _err(f"{r['state']:>19}  {r['name']}")
    if unknown:
        _err(f"ledger names unknown migrations: {', '.join(unknown)}")
    return EXIT_FAILED if drift else EXIT_OK


def main(argv: Sequence[str] | None = None, prog: str = "opsgate-migrate") -> int:
    args = build_parser(prog).parse_args(argv)
    return dispatch(args)


def dispatch(args: argparse.Namespace) -> int:
    try:
        settings = Settings.load(env_file=args.env_file)
        if args.command == "list":
            scripts = discover_scripts(args.migrations_dir)
            _emit([{"name": s.name, "source": s.source, "target": s.target,
                    "checksum": s.checksum, "path": str(Path(s.path))} for s in scripts])
            return EXIT_OK
        if args.command == "status":
            return _status(args, settings)
        script = find_script(args.migrations_dir, args.name)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except OpsgateError as exc:
        _err(str(exc))
        return EXIT_FAILED
    result = run_migration(script, settings, apply=args.apply, force=args.force,
                           reason=args.reason, source=args.source,
                           lock_timeout=args.lock_timeout,
                           statement_timeout=args.statement_timeout)
    _emit(result.summary)
    _err(f"{result.summary['status']}: {result.message}")
    return result.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
