"""``opsgate rollback status|to-blob|to-neon|rehearse``.

stdout: the steps and the outcome for people, or with ``--json`` exactly one JSON
document (the summary, also kept as ``rollback.json`` in the run's record folder);
progress goes to stderr. Exit codes: 0 done, nothing to do, or planned; 1 refused or
failed; 2 usage or configuration error; 130 interrupted (re-run to resume).
SIGTERM stops a run as Ctrl-C does, and leaves its record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opsgate.config import Settings


def _environments(text: str) -> tuple[str, ...]:
    from opsgate.rollback.observe import ENVIRONMENTS  # only when given: a light parser

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in ENVIRONMENTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"environments are {', '.join(ENVIRONMENTS)}; "
                                          f"got {text!r}")
    return names


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env-file", type=Path, metavar="PATH",
                   help="the target's settings (as `vercel env pull` writes them)")
    p.add_argument("--environments", type=_environments, default=("production",),
                   metavar="LIST", help="production,preview (default: production)")
    p.add_argument("--json", action="store_true", help="print the JSON summary")


def _switch(sub: Any, name: str, backend: str, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    _common(p)
    p.add_argument("--reason", required=True, help="why (recorded everywhere)")
    p.add_argument("--apply", action="store_true", help="act (default: dry run)")
    p.add_argument("--approve-production", metavar="PROJECT",
                   help="act on production: the Vercel project's name, as the refusal says")
    p.add_argument("--write-audit", action="store_true",
                   help="append the changelog and checkpoint entries to the files the "
                   "change-control check reads (OPSGATE_CHANGE_CHANGELOG, "
                   "OPSGATE_CHANGE_CHECKPOINT) instead of printing them")
    p.add_argument("--reports-dir", type=Path, default=Path("reports"), metavar="DIR")
    p.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                   help="how long to wait for a redeploy to be READY (default 600)")
    p.add_argument("--poll", type=float, default=5.0, metavar="SECONDS",
                   help="how often to look at it (default 5)")
    p.set_defaults(handler=run_switch, backend=backend)
    return p


def add_parser(sub: Any) -> None:
    p = sub.add_parser("rollback", help="switch admin storage to the blob fallback and "
                       "back, guarded and recorded (dry run unless --apply)")
    inner = p.add_subparsers(dest="rollback_command", metavar="{status,to-blob,to-neon,rehearse}")
    s = inner.add_parser("status", help="where each environment stands, and what a "
                         "rollback or a return would do now")
    _common(s)
    s.set_defaults(handler=run_status)
    b = _switch(inner, "to-blob", "blob", "switch to the blob fallback")
    b.add_argument("--accept-fallback-as-is", action="store_true",
                   help="serve a fallback that differs from Neon (shows the differences)")
    n = _switch(inner, "to-neon", "neon", "carry fallback edits back, prove Neon, switch back")
    n.add_argument("--recover-from-blob", action="store_true",
                   help="run the forced restore of the fallback into Neon first")
    r = inner.add_parser("rehearse", help="the whole round trip on a throwaway sandbox, "
                         "recorded as a drill (never production)")
    r.add_argument("--reports-dir", type=Path, default=Path("reports"), metavar="DIR")
    r.add_argument("--json", action="store_true", help="print the JSON summary")
    r.set_defaults(handler=run_rehearse)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def _settings(args: argparse.Namespace) -> Settings:
    from opsgate.config import Settings

    return Settings.load(env_file=args.env_file)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_status(args: argparse.Namespace) -> int:
    from opsgate.clients import vercel
    from opsgate.errors import ConfigError, OpsgateError
    from opsgate.rollback import status
    from opsgate.rollback.observe import observe

    try:
        settings = _settings(args)
        link = vercel.resolve_link(settings, Path.cwd())
        with vercel.connect(settings, link) as api:
            doc = status.status(observe(api, settings, args.environments))
    except OpsgateError as exc:
        print(f"opsgate rollback status: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print("\n".join(status.lines(doc)))
    return 0


def run_switch(args: argparse.Namespace) -> int:
    from opsgate.errors import ConfigError
    from opsgate.interrupts import stop_on_signals
    from opsgate.rollback import deploy
    from opsgate.rollback.switch import RollbackOptions, as_lines, run

    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"opsgate rollback: {exc}", file=sys.stderr)
        return 2
    options = RollbackOptions(
        backend=args.backend, reason=args.reason, apply=args.apply,
        environments=args.environments,
        accept_fallback_as_is=getattr(args, "accept_fallback_as_is", False),
        recover_from_blob=getattr(args, "recover_from_blob", False),
        approve_production=args.approve_production, write_audit=args.write_audit,
        reports=args.reports_dir, env_file=args.env_file,
        pace=deploy.Pace(args.wait, args.poll))
    with stop_on_signals():
        summary = run(options, settings, _say)
    if args.json:
        sys.stdout.write(json.dumps(summary.as_json(), indent=2) + "\n")
    else:
        print("\n".join(as_lines(summary)))
        audit = summary.details.get("audit", {})
        if audit.get("due") and not audit.get("written"):
            print("record these (or re-run with --write-audit next time):")
            print(f"  changelog:  {audit.get('changelog')}")
            print(f"  checkpoint: {audit.get('checkpoint')}")
        if summary.details.get("record_dir"):
            print(f"record: {summary.details['record_dir']}")
    return int(summary.exit_code or 0)


def run_rehearse(args: argparse.Namespace) -> int:
    from opsgate.interrupts import stop_on_signals
    from opsgate.rollback.rehearse import rehearse
    from opsgate.rollback.switch import as_lines

    with stop_on_signals():
        summary = rehearse(args.reports_dir, _say)
    if args.json:
        sys.stdout.write(json.dumps(summary.as_json(), indent=2) + "\n")
    else:
        print("\n".join(as_lines(summary)))
        print(f"record: {summary.details.get('record_dir')}")
    return int(summary.exit_code or 0)
