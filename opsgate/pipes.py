"""A reader that closed our standard output early, as in ``opsgate reports list | head``.

Shared by the command-line front doors (`opsgate.cli`, `opsgate.migrate.cli`), each of
which catches the BrokenPipeError that follows and exits through here.
"""

from __future__ import annotations

import os
import sys


def reader_went_away() -> int:
    """Python's own advice (the signal module's docs): point stdout at devnull, so the
    interpreter's final flush cannot raise again, and exit quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1
