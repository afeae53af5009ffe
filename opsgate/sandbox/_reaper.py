"""Watchdog for an embedded cluster: cleans up after an owner that died uncleanly.

Runs in its own session (so Ctrl-C in the owner's terminal does not reach it), polls
the owner's pid, and when the owner is gone stops the cluster immediately and deletes
its folder. When the owner stops the cluster itself, it terminates this process.
Usage: python -I -S path/to/_reaper.py OWNER_PID PG_CTL ROOT UID GID [ALSO ...]
(ALSO: further files or folders of the owner's to delete, such as a sandbox's folder
and its settings file, which holds passwords.)

It is run as a file, by an isolated interpreter without ``site``, imports no opsgate
module, and imports what only a clean-up needs (subprocess, shutil) only then: one runs
per cluster (a drill starts one, a self-test run over a hundred), and as ``python -m
opsgate.sandbox._reaper`` it spent 60-90 ms of CPU on ``site``, the opsgate package
(its version lookup, the legacy module finder) and those modules before its first
line; about 15-20 ms now.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def alive(pid: int) -> bool:
    """`opsgate.processes.alive`, repeated: this file imports no opsgate module."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str]) -> int:
    owner, pg_ctl, root, uid, gid = int(argv[0]), argv[1], argv[2], int(argv[3]), int(argv[4])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while alive(owner):
        if not os.path.exists(root):
            return 0
        time.sleep(0.5)
    clean_up(pg_ctl, root, uid, gid, argv[5:])
    return 0


def clean_up(pg_ctl: str, root: str, uid: int, gid: int, also: list[str]) -> None:
    """The owner died: stop the server (immediate) and delete ``root`` and ``also``."""
    import contextlib
    import shutil
    import subprocess

    datadir = os.path.join(root, "data")
    if os.path.exists(os.path.join(datadir, "postmaster.pid")):
        subprocess.run(
            [pg_ctl, "-D", datadir, "-m", "immediate", "-w", "-t", "30", "stop"],
            capture_output=True, check=False, timeout=60,
            user=uid if uid >= 0 else None, group=gid if gid >= 0 else None,
        )
    shutil.rmtree(root, ignore_errors=True)
    for extra in also:
        if os.path.isdir(extra) and not os.path.islink(extra):
            shutil.rmtree(extra, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(extra)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
