"""Progress bars reach a terminal, past pytest's capture in a gate run, and nothing else:
not a pipe (CI logs), not a ``-q`` run."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.gate_helpers import ROOT, clean_env

GENERATE = ("from opsgate.sandbox import datagen; import io; "
            "datagen.write_payload(io.StringIO(), 5000)")


def _on_terminal(args: list[str], env: dict[str, str], timeout: float = 240,
                 stdout_too: bool = False) -> tuple[int, str]:
    """Run with stderr (and stdout) on a pseudo-terminal of 120 columns; its output."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                            stdout=slave if stdout_too else subprocess.DEVNULL,
                            stderr=slave, cwd=ROOT, env=env)
    os.close(slave)
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    return proc.wait(30), out.decode(errors="replace")


def test_a_bar_on_a_terminal_and_nothing_in_a_pipe() -> None:
    code, shown = _on_terminal([sys.executable, "-c", GENERATE], clean_env())
    assert code == 0
    assert "sandbox: generating the payload" in shown
    assert "nodes/s" in shown and "edges/s" in shown
    piped = subprocess.run([sys.executable, "-c", GENERATE], capture_output=True, text=True,
                           cwd=ROOT, env=clean_env(), timeout=120)
    assert piped.returncode == 0 and piped.stderr == ""


def test_the_gate_draws_the_sandbox_build_past_capture_and_not_under_q(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--sandbox",
            "--sandbox-scale", "200", "-m", "preflight", f"--reports-dir={tmp_path}"]
    code, shown = _on_terminal(base, clean_env())
    assert code == 0, shown[-2000:]
    assert "sandbox: generating the payload" in shown and "sandbox: migrations" in shown
    code, quiet = _on_terminal([*base, "-q"], clean_env())
    assert code == 0, quiet[-2000:]
    assert "sandbox: generating" not in quiet and "sandbox: migrations" not in quiet


def _screen(output: str) -> list[str]:
    """The lines a terminal shows for ``output``: carriage returns move back to the start
    of the line and later text overwrites earlier (colours and cursor moves dropped)."""
    import re

    lines = []
    for raw in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output).split("\n"):
        cells: list[str] = []
        col = 0
        for ch in raw:
            if ch == "\r":
                col = 0
                continue
            if col < len(cells):
                cells[col] = ch
            else:
                cells.append(ch)
            col += 1
        lines.append("".join(cells).rstrip())
    return lines


def test_a_bar_inside_a_check_leaves_pytests_own_lines_whole(tmp_path: Path) -> None:
    code, shown = _on_terminal(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--sandbox",
         "--sandbox-scale", "200", "-m", "preflight or parity", f"--reports-dir={tmp_path}"],
        clean_env(), stdout_too=True)
    assert code == 0, shown[-2000:]
    assert "fetch /api/constellation" in shown  # a bar was drawn by the parity checks
    screen = _screen(shown)
    assert any(line.startswith("checks/test_parity.py .") for line in screen), screen
    assert any(line.startswith("checks/test_preflight.py .") for line in screen), screen
