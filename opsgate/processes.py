"""Whether a process still lives: the one question the reaper and the drill's sweep of
dead drills' dump folders both ask."""

from __future__ import annotations

import os

__all__ = ["alive"]


def alive(pid: int) -> bool:
    """True while ``pid`` exists (someone else's process included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
