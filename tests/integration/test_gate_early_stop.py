"""`opsgate gate` stopped during pytest's start-up, before the gate's plugin records a
run: one line and the exit code of a stopped gate, no traceback, nothing written.
Before, SIGINT printed a KeyboardInterrupt traceback and the process died of the signal,
and SIGTERM's default action ended it without a word."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.gate_helpers import clean_env

#: A pytest plugin (``-p``) that pytest imports during its start-up, before any plugin
#: is configured: it says so in a file, then waits there for the test's signal.
SLOW_PLUGIN = """
import os, pathlib, time
pathlib.Path(os.environ["STARTED_FILE"]).write_text("importing")
time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_stop_during_pytests_start_up_is_one_line(tmp_path: Path,
                                                     sig: signal.Signals) -> None:
    (tmp_path / "slow_start_plugin.py").write_text(SLOW_PLUGIN)
    started = tmp_path / "started"
    env = clean_env() | {"STARTED_FILE": str(started),
                         "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsgate.cli", "gate", "--sandbox", "-p", "slow_start_plugin"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "pytest never imported the plugin"
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, (proc.returncode, out, err)
    assert err.strip() == ("opsgate: interrupted before the gate started; no run was "
                           "recorded"), err
    assert "Traceback" not in out + err
    assert not (tmp_path / "reports").exists()


def test_the_command_ignores_stops_once_the_gate_is_over(tmp_path: Path) -> None:
    """Its exit code decided, a stop during the interpreter's shutdown (0.1-0.2 s)
    turned a recorded run's exit into death by SIGINT: the command ignores stops then.
    A caller of `main(argv)` in its own process keeps its handlers."""
    code = ("import signal, sys\nfrom opsgate.cli import main\n"
            "sys.argv = ['opsgate', 'gate', '--version']\nmain()\n"
            "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN,\n"
            "      signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "main(['gate', '--version'])\n"
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stdout.splitlines() if not line.startswith("pytest ")]
    assert said == ["True True", "True"], done.stdout


def test_a_stop_after_the_run_was_recorded_exits_as_the_record_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop as pytest unconfigures, the run already recorded (passed, exit status 0):
    the command exited 2 while its record said 0. The record's code stands; a run folder
    without a summary is said to be incomplete."""
    from opsgate import cli, interrupts

    runs = tmp_path / "reports" / "runs"

    def recorded_then_stopped(args: Any) -> int:
        run = runs / "20261205T000000Z_sandbox"
        run.mkdir(parents=True)
        (run / "summary.json").write_text('{"exit_status": 0, "verdict": "passed"}')
        raise interrupts.Interrupted("SIGINT")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "gate", recorded_then_stopped)
    assert cli._stoppable_gate([]) == 0

    def stopped_before_its_summary(args: Any) -> int:
        (runs / "20261205T000001Z_sandbox").mkdir(parents=True)
        raise interrupts.Interrupted("SIGINT")

    monkeypatch.setattr(cli, "gate", stopped_before_its_summary)
    assert cli._stoppable_gate([]) == 2
    interrupts.reset()
