"""``opsgate refresh --source-env-file=A --target-env-file=B [--apply]``.

stdout: a table for people, or with ``--json`` exactly one JSON document (the summary,
also kept as ``summary.json`` in the run folder); progress and the one-line outcome go
to stderr. Exit codes: 0 planned or applied, 1 refused or failed, 2 usage or
configuration error, 130 stopped by SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "refresh", help="guarded production-to-local refresh (dry run unless --apply)",
        description="Export both databases, verify the source's expected production "
        "markers, and with --apply replace the target's tables with the source's. The "
        "source is never written.")
    p.add_argument("--source-env-file", type=Path, required=True, metavar="A",
                   help="env file of the source (production): DATABASE_URL[_UNPOOLED], "
                   "OPSGATE_EXPECTATIONS_FILE")
    p.add_argument("--target-env-file", type=Path, required=True, metavar="B",
                   help="env file of the target (local): DATABASE_URL[_UNPOOLED]")
    p.add_argument("--apply", action="store_true",
                   help="restore the source's export into the target (default: dry run)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="run folder for the exports and summary.json (default: "
                   "reports/refresh/<UTC time>_<pid>); must not exist or be empty")
    p.add_argument("--approve-target", metavar="HOST:PORT/DATABASE",
                   help="refresh a target that looks like production; must name it "
                   "exactly as the refusal does")
    p.add_argument("--expectations", metavar="FILE",
                   help="the source's expected markers (default: the source env file's "
                   "OPSGATE_EXPECTATIONS_FILE)")
    p.add_argument("--json", action="store_true",
                   help="print the JSON summary instead of the table")
    p.set_defaults(handler=run)


def _table(summary: dict[str, Any]) -> None:
    header = ["table", "source rows", "target before", "target after", "source sha256",
              "match"]
    rows = [[str(r["table"]), str(r["source_rows"]), _n(r.get("target_rows_before")),
             _n(r.get("target_rows_after")), str(r["source_sha256"])[:12],
             {True: "yes", False: "NO", None: "-"}[r.get("match")]]
            for r in summary["tables"]]
    if rows:
        widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=False)]
        for line in (header, *rows):
            print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)).rstrip())
    for label in ("source", "target"):
        side = summary.get(label) or {}
        # The target is written through its direct URL: that one first, then the
        # DATABASE_URL it was named by, when that is another (a pooled endpoint).
        used, given = side.get("database_direct") or side.get("database"), side.get("database")
        if used:
            print(f"{label}: {used}" + (f" (DATABASE_URL {given})" if given != used else ""))
    for name, a in (summary.get("archives") or {}).items():
        print(f"export {name}: {a['path']} ({a['bytes']} bytes, sha256 {a['sha256']})")
    print(f"mode: {summary['mode']}  status: {summary['status']}"
          + (f"  ledger row: {summary['ledger_id']}" if summary.get("ledger_id") else ""))


def _n(value: Any) -> str:
    return "-" if value is None else str(value)


def run(args: argparse.Namespace) -> int:
    from opsgate import interrupts
    from opsgate.refresh.run import RefreshOptions, refresh

    # SIGTERM stops a refresh as Ctrl-C does: pg_dump or pg_restore stopped, the target
    # left as it was, the summary written (exit 130).
    with interrupts.stop_on_signals():
        result = refresh(RefreshOptions(
            source_env_file=args.source_env_file, target_env_file=args.target_env_file,
            apply=args.apply, out=args.out, approve_target=args.approve_target,
            expectations_file=args.expectations))
    if args.json:
        sys.stdout.write(json.dumps(result.summary, indent=2, default=str) + "\n")
    else:
        _table(result.summary)
    sys.stdout.flush()
    print(f"opsgate refresh: {result.summary['status']}: {result.message}", file=sys.stderr,
          flush=True)
    return result.exit_code
