"""``opsgate sandbox up``: the sandbox target in the foreground, for operators and for
testing the gate from outside. Prints one line saying where its settings are, then
runs until Ctrl-C or SIGTERM and tears everything down.

Both signals raise `KeyboardInterrupt` (`opsgate.interrupts.stop_on_signals`) from the
start, so a stop during the build cancels the query running then and removes the
half-built cluster (exit 130); once it is up, a stop is how it ends (exit 0)."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from opsgate import interrupts
from opsgate.errors import OpsgateError
from opsgate.operation import EXIT_INTERRUPTED

DEFAULT_ENV_FILE = ".env.sandbox"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sandbox", help="the self-contained sandbox target")
    inner = p.add_subparsers(dest="sandbox_command", required=True)
    up = inner.add_parser("up", help="start the sandbox in the foreground")
    up.add_argument("--env-file", default=DEFAULT_ENV_FILE, metavar="PATH",
                    help=f"where to write the sandbox's settings (default {DEFAULT_ENV_FILE})")
    up.add_argument("--scale", type=int, default=None, metavar="N",
                    help="seed a generated graph of N entities instead of the fixture")
    up.add_argument("--profile", choices=("plain", "neon"), default="plain",
                    help="plain: one local server; neon: production's topology (TLS-only "
                    "server, non-superuser owner, PgBouncer in transaction mode, Vercel-shaped "
                    "pooled and direct URLs; needs the pgbouncer program)")
    up.add_argument("--fault", action="append", default=[], metavar="NAME",
                    help="make the reference API misbehave (see docs/sandbox.md)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with interrupts.stop_on_signals():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from opsgate.sandbox import Sandbox

    if args.scale is not None and args.scale < 1:
        print("opsgate sandbox: --scale must be at least 1", file=sys.stderr)
        return 2
    env_file = Path(args.env_file).resolve()
    # The file is the sandbox's and is deleted when it stops: never someone else's.
    if env_file.exists():
        print(f"opsgate sandbox: {env_file} already exists; the sandbox writes its settings "
              "to a new file and deletes it when it stops, so give a path that does not "
              "exist yet", file=sys.stderr)
        return 2
    if not env_file.parent.is_dir():
        print(f"opsgate sandbox: {env_file.parent} is not a folder", file=sys.stderr)
        return 2
    from opsgate.sandbox.reference_app import FAULTS

    unknown = [f for f in args.fault or () if f not in FAULTS]
    if unknown:
        print(f"opsgate sandbox: unknown fault(s) {', '.join(unknown)}; known: "
              + ", ".join(FAULTS), file=sys.stderr)
        return 2
    what = f"{args.scale:,} entities" if args.scale else "fixture scale"
    print(f"opsgate sandbox: building ({args.profile} profile, {what})...", file=sys.stderr,
          flush=True)
    try:
        sandbox = Sandbox.start(scale=args.scale, env_file=env_file, profile=args.profile)
    except OpsgateError as exc:
        print(f"opsgate sandbox: did not start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Sandbox.start has stopped its server and removed its folder on the way here.
        print(f"opsgate sandbox: stopped by {interrupts.received() or 'SIGINT'} while "
              "building; nothing was left running", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    try:
        if args.fault:
            sandbox.faults.set(*args.fault)
        print(f"opsgate sandbox: up ({sandbox.profile} profile); settings in {sandbox.env_file} "
              f"(run: opsgate gate --env-file={sandbox.env_file}); Ctrl-C to stop", flush=True)
        forever = threading.Event()
        while not forever.wait(3600):
            pass
    except KeyboardInterrupt:
        pass  # how a running sandbox is meant to end
    except ValueError as exc:
        print(f"opsgate sandbox: {exc}", file=sys.stderr)
        return 2
    finally:
        sandbox.stop()
        Path(sandbox.env_file).unlink(missing_ok=True)
    print("opsgate sandbox: stopped", flush=True)
    return 0
