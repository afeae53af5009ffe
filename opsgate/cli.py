"""``opsgate``: the commands that are not a pytest run.

``opsgate migrate ...`` (the guarded runner), ``opsgate sandbox up`` (the sandbox in
the foreground), ``opsgate reports verify|list|show``. Exit codes: 0 success, 1 a
check or migration failed or was refused, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import reports_cli, sandbox_cli
from .migrate import cli as migrate_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opsgate", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="area", required=True)
    m = sub.add_parser("migrate", help="data migrations under the runbook's safeguards")
    migrate_cli.add_arguments(m)
    sandbox_cli.add_parser(sub)
    reports_cli.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.area == "migrate":
        return migrate_cli.dispatch(args)
    handler = getattr(args, "handler", None)
    if handler is None:  # pragma: no cover
        return 2
    code: int = handler(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
