"""The wait for the run's one npm install ends on what happened, not on the clock."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from opsgate import processes
from tests import node_packages


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _install_folder(tmp_path: Path, npm: int, recorder: int) -> Path:
    (tmp_path / "npm.what").write_text("npm install allure@3")
    (tmp_path / "npm.pid").write_text(str(npm))
    (tmp_path / "npm.recorder").write_text(str(recorder))
    (tmp_path / "npm.log").write_text("npm error 404 Not Found\n")
    return tmp_path


def test_an_install_whose_recorder_is_gone_fails_at_once_with_npms_output(
        tmp_path: Path) -> None:
    folder = _install_folder(tmp_path, _dead_pid(), _dead_pid())
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"stopped without a result.*404"):
        node_packages.wait(folder, timeout=30)
    assert time.monotonic() - started < 5  # not the 30 s time-out


def test_an_ended_install_is_waited_for_until_its_recorder_writes_the_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """npm has ended and its recorder (this process) is slow to write the exit code (a
    loaded machine): the wait goes on while the recorder lives. The exit code is written
    only once the wait has looked at the live recorder five times; a fixed second's
    grace failed this install as "stopped without a result"."""
    folder = _install_folder(tmp_path, _dead_pid(), os.getpid())
    looked = threading.Semaphore(0)
    alive = processes.alive

    def watched(pid: int) -> bool:
        if pid == os.getpid():
            looked.release()
        return alive(pid)

    monkeypatch.setattr(node_packages, "alive", watched)

    def record() -> None:
        for _ in range(5):
            if not looked.acquire(timeout=30):
                return  # the wait stopped looking: it has failed already
        (folder / "npm.rc").write_text("0")

    recorder = threading.Thread(target=record)
    recorder.start()
    try:
        assert node_packages.wait(folder, timeout=30) == folder
    finally:
        recorder.join(35)
    assert (folder / "npm.rc").exists()


def test_a_failed_install_fails_with_its_exit_code_and_output(tmp_path: Path) -> None:
    folder = _install_folder(tmp_path, _dead_pid(), os.getpid())
    (folder / "npm.rc").write_text("1")
    with pytest.raises(pytest.fail.Exception, match=r"failed \(exit 1\).*404"):
        node_packages.wait(folder, timeout=30)
