"""Watchdog for an embedded cluster: cleans up after an owner that died uncleanly.

Runs in its own session (so Ctrl-C in the owner's terminal does not reach it), polls
the owner's pid, and when the owner is gone stops the cluster immediately and deletes
its folder. When the owner stops the cluster itself, it terminates this process.
Usage: python -m opsgate.sandbox._reaper OWNER_PID PG_CTL ROOT UID GID [ALSO ...]
(ALSO: further files or folders of the owner's to delete, such as a sandbox's folder
and its settings file, which holds passwords.)
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from opsgate.processes import alive


def main(argv: list[str]) -> int:
    owner, pg_ctl, root, uid, gid = int(argv[0]), argv[1], Path(argv[2]), int(argv[3]), int(argv[4])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while alive(owner):
        if not root.exists():
            return 0
        time.sleep(0.5)
    datadir = root / "data"
    if (datadir / "postmaster.pid").exists():
        subprocess.run(
            [pg_ctl, "-D", str(datadir), "-m", "immediate", "-w", "-t", "30", "stop"],
            capture_output=True, check=False, timeout=60,
            user=uid if uid >= 0 else None, group=gid if gid >= 0 else None,
        )
    shutil.rmtree(root, ignore_errors=True)
    for extra in map(Path, argv[5:]):
        if extra.is_dir() and not extra.is_symlink():
            shutil.rmtree(extra, ignore_errors=True)
        else:
            extra.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
