"""The wait for the run's one npm install ends on what happened, not on the clock."""

from __future__ import annotations

import os
import subprocess
import sys
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


def _fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stalls: int,
              busy: str = "") -> Path:
    """An ``npm`` first in PATH that stalls (does nothing and never ends) its first
    ``stalls`` times, then installs: the hang of npm/cli#4028, on demand. With
    ``busy``, Python code it runs first, in its own process as npm does its work."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(f"#!{sys.executable}\n"
                   "import os, pathlib, time\n"
                   f"runs = pathlib.Path({str(tmp_path / 'runs')!r})\n"
                   "n = int(runs.read_text()) if runs.exists() else 0\n"
                   "runs.write_text(str(n + 1))\n"
                   f"if n < {stalls}:\n"
                   "    time.sleep(300)\n"
                   f"{busy}\n"
                   "os.makedirs('node_modules/pkg', exist_ok=True)\n"
                   "print('installed', flush=True)\n")
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(node_packages, "STALL_S", 0.5)
    folder = tmp_path / "node-packages"
    folder.mkdir()
    return folder


def test_a_stalled_npm_is_stopped_and_started_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _fake_npm(tmp_path, monkeypatch, stalls=2)
    started = node_packages.install(folder, ["allure@3"])
    stalled = started.proc
    assert node_packages.wait(folder, timeout=60) == folder
    started.thread.join(10)
    assert (tmp_path / "runs").read_text().strip() == "3"
    assert (folder / "node_modules" / "pkg").is_dir()
    log = (folder / "npm.log").read_text()
    assert log.count("npm made no progress for 0.5 s and was stopped, then started again") == 2
    assert log.endswith("installed\n")
    assert stalled.returncode == -9  # the first npm was killed, not left running


def test_an_npm_that_stalls_every_time_fails_the_install_saying_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _fake_npm(tmp_path, monkeypatch, stalls=9)
    monkeypatch.setattr(node_packages, "RESTARTS", 1)
    started = node_packages.install(folder, ["allure@3"])
    with pytest.raises(pytest.fail.Exception,
                       match=r"(?s)ended by signal 9.*made no progress for 0.5 s and was stopped\)"):
        node_packages.wait(folder, timeout=60)
    started.thread.join(10)
    assert (tmp_path / "runs").read_text().strip() == "2"
    assert not processes.alive(started.proc.pid)


def test_a_stop_during_a_stall_kills_npm_and_starts_no_other(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _fake_npm(tmp_path, monkeypatch, stalls=9)
    monkeypatch.setattr(node_packages, "STALL_S", 300.0)
    started = node_packages.install(folder, ["allure@3"])
    started.stop()
    started.thread.join(10)
    assert not started.thread.is_alive()
    assert (folder / "npm.rc").read_text() == "-9"
    assert (tmp_path / "runs").read_text().strip() == "1"
    assert not processes.alive(started.proc.pid)


def test_an_npm_that_reads_without_logging_is_not_stalled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A download in progress is not logged until it is done; the bytes npm reads are
    its progress meanwhile (here 3 s of reads, 0.5 s allowed without progress)."""
    reads = ("with open('/dev/zero', 'rb') as f:\n"
             "    for _ in range(30):\n"
             "        f.read(65536)\n"
             "        time.sleep(0.1)\n")
    folder = _fake_npm(tmp_path, monkeypatch, stalls=0, busy=reads)
    started = node_packages.install(folder, ["allure@3"])
    assert node_packages.wait(folder, timeout=60) == folder
    started.thread.join(10)
    assert (tmp_path / "runs").read_text().strip() == "1"
    assert "no progress" not in (folder / "npm.log").read_text()
