"""``opsgate env [--env-file PATH]``: every variable opsgate knows, its value as opsgate
sees it and where that came from.

An operator asking "which folder, which time-out, which database would this run use,
and did my env file count?" gets the answer `Settings` gives a run, not a guess from
the docs. Secrets never print: a secret shows as ``***``, a URL without its password,
and the whole listing passes through the settings' redactor as well.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from opsgate.config import FLAG_DEFAULTS, VARIABLES, Settings, shown
from opsgate.errors import ConfigError
from opsgate.operation import EXIT_OK, EXIT_USAGE


def add_parser(sub: Any) -> None:
    p = sub.add_parser("env", help="every variable opsgate knows: its value (secrets "
                       "masked) and where it came from (environment, env file, default)")
    p.add_argument("--env-file", metavar="PATH",
                   help="dotenv file merged under the environment, as the gate reads it")
    p.set_defaults(handler=run)


def rows(settings: Settings) -> list[tuple[str, str, str]]:
    """(variable, value as it may print, where it came from), variables then flags. An
    unset variable shows its default, or ``-`` when unset means not configured."""
    found: list[tuple[str, str, str]] = []
    for name, var in VARIABLES.items():
        origin = settings.origins.get(name, "default")
        if name == "OPSGATE_MIGRATIONS_DIR":
            value = settings.migrations_dir  # the folder the default resolved to
        elif origin == "default":
            value = var.default if var.default is not None else "-"
        else:
            value = settings.source.get(name, "")
        found.append((name, shown(name, value) if origin != "default" else value, origin))
    for flag in FLAG_DEFAULTS:
        found.append((flag, "true" if settings.flags[flag] else "false",
                       settings.origins.get(flag, "default")))
    return found


def render(settings: Settings) -> str:
    table = [("variable", "value", "from"), *rows(settings)]
    widths = [max(len(r[i]) for r in table) for i in range(2)]
    text = "\n".join(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}".rstrip()
                     for r in table) + "\n"
    return settings.redactor()(text)


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.load(env_file=args.env_file)
    except ConfigError as exc:
        print(f"opsgate env: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(render(settings))
    return EXIT_OK
