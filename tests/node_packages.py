"""The npm packages the self-tests run as oracles (the vendors' own clients: Allure 3,
@vercel/sdk, @vercel/blob, @next/env), installed once per run by one ``npm install``
that starts in the background as soon as the tests are collected.

Each test module used to install its own package when its first test came up, and
waited for it: about 20 s for Allure 3 alone, mostly waiting on the registry and the
disk. Now the first test process whose collected tests need packages starts one
install of them into the run's own temporary folder (the parent of every xdist
worker's), under a file lock, and the install overlaps the tests that run meanwhile.

A test (or module) names what it runs with ``@pytest.mark.npm(...)``; the install
holds what the collected tests named (a test that uses the fixture unmarked gets all of
`PACKAGES`), so a run of one module installs that module's package only. The
``node_packages`` fixture waits for the install and gives its folder, whose
``node_modules`` holds them; a failed install fails every test that needs it with npm's
own output; an install that stopped without a result (its process gone) or that takes
longer than `TIMEOUT` fails them too, never hangs them. npm itself sometimes stalls for
good (npm/cli#4028): one that makes no progress for `STALL_S` is stopped and started
again, at most `RESTARTS` times, each time saying so in its output.

The process that started the install waits for it when its session ends (another
worker may still need it) and stops it when the run was interrupted; the kernel stops
it if that process dies first. Registered by ``tests/conftest.py``."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

from opsgate.processes import alive, wait_exit
from opsgate.sandbox.pgbouncer import _die_with_parent
from tests.tools import NODE, require

#: What the tests run, pinned as each test needs it.
ALLURE = "allure@3"
#: The SDK whose schemas are the oracle, pinned exactly: another version may validate
#: otherwise.
VERCEL_SDK = "@vercel/sdk@1.28.35"
VERCEL_BLOB = "@vercel/blob@^2"
NEXT_ENV = "@next/env@16.5.0"
PACKAGES = (ALLURE, VERCEL_SDK, VERCEL_BLOB, NEXT_ENV)

#: npm sometimes stops making progress and never ends (npm/cli#4028, #7891, seen here
#: after its last tarball came from the cache): no byte read or written (sockets
#: included) and nothing logged for this long, and it is stopped and started again, at
#: most `RESTARTS` times. Longer than npm's own longest silent wait, its back-off
#: between two tries of a fetch (``fetch-retry-maxtimeout``, 60 s).
STALL_S = 90.0
RESTARTS = 2

#: Longest wait for the install, from the moment a test starts waiting.
TIMEOUT = 600.0
#: From npm's cache where it has the packages, without install scripts or a lock file:
#: none of them needs either. Errors only (``--silent`` hid npm's reason for a failure
#: too), and npm's own log in the install's folder.
_FLAGS = ("--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline",
          "--ignore-scripts", "--no-package-lock")
_FIXTURE = "node_install"  # node_packages needs it too
_MARK = "npm"
_STARTED = pytest.StashKey["Install"]()


def _shared(config: pytest.Config) -> Path:
    """The run's own temporary folder: under xdist, the parent of every worker's."""
    base: Path = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _folder(config: pytest.Config) -> Path:
    return _shared(config) / "node-packages"


def _wanted(items: list[pytest.Item]) -> list[str]:
    """The packages the tests among ``items`` that use the fixture named, in `PACKAGES`'
    order."""
    named: set[str] = set()
    for item in items:
        if _FIXTURE in getattr(item, "fixturenames", ()):
            marks = list(item.iter_markers(_MARK))
            for args in [m.args for m in marks] if marks else [PACKAGES]:
                named.update(args)
    unknown = named - set(PACKAGES)
    if unknown:
        raise pytest.UsageError(f"npm marks name packages not in tests.node_packages."
                                f"PACKAGES: {sorted(unknown)}")
    return [p for p in PACKAGES if p in named]


def _start(config: pytest.Config, packages: list[str]) -> None:
    """Start installing ``packages`` unless a process of this run already started the
    install."""
    shared = _shared(config)
    folder = _folder(config)
    with FileLock(str(shared / "node-packages.lock")):
        if folder.exists():
            return
        folder.mkdir()
        config.stash[_STARTED] = install(folder, packages)


class Install:
    """The run's npm install, as started by this process: the npm running now (a new
    one after a stall), and the thread that waits for it and records its exit code.
    Only that thread kills or reaps npm, so a stop never races a restart."""

    proc: subprocess.Popen[bytes]

    def __init__(self, folder: Path, packages: list[str]) -> None:
        self.folder, self.packages = folder, packages
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._record, name="npm-install",
                                       daemon=True)

    def start(self) -> None:
        """The first npm, started on the caller's thread (a long-lived one: npm dies
        with the thread that started it), then the thread that waits for it."""
        self.proc = self._spawn()
        self.thread.start()

    def stop(self) -> None:
        """Have npm killed (within a second) and no new one started."""
        self.stopped.set()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with (self.folder / "npm.log").open("ab") as log:
            proc = subprocess.Popen(
                ["npm", "install", *_FLAGS, f"--logs-dir={self.folder / 'logs'}",
                 *self.packages], cwd=self.folder, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent())
        # Replaced whole: a wait reading it meanwhile sees the old pid or the new one.
        (self.folder / "npm.pid.tmp").write_text(str(proc.pid))
        (self.folder / "npm.pid.tmp").replace(self.folder / "npm.pid")
        return proc

    def _record(self) -> None:
        """The exit code, for every process of the run to read; a stalled npm is
        stopped and started again first (`STALL_S`, `RESTARTS`). Started on this
        thread, the new npm dies with it (`_die_with_parent` follows the thread)."""
        for restart in range(RESTARTS + 1):
            code = _exit_stall_or_stop(self.proc, self.folder, self.stopped)
            if code is not None:
                break
            self.proc.kill()
            wait_exit(self.proc, None)
            code = self.proc.returncode
            if self.stopped.is_set():
                break
            again = restart < RESTARTS
            with (self.folder / "npm.log").open("a") as log:
                log.write(f"(the self-tests: npm made no progress for {STALL_S:g} s and "
                          f"was stopped{', then started again' if again else ''})\n")
            if not again:
                break
            shutil.rmtree(self.folder / "node_modules", ignore_errors=True)
            self.proc = self._spawn()
        (self.folder / "npm.rc.tmp").write_text(str(code))
        (self.folder / "npm.rc.tmp").replace(self.folder / "npm.rc")


def install(folder: Path, packages: list[str]) -> Install:
    """Start npm installing ``packages`` into ``folder`` (empty, of this run), and the
    thread that records how it ended."""
    (folder / "package.json").write_text(
        '{"name": "opsgate-self-test-packages", "private": true}')
    (folder / "npm.what").write_text(" ".join(["npm", "install", *packages]))
    # The process whose thread writes npm.rc: once it and npm are both gone without
    # an npm.rc, none will come.
    (folder / "npm.recorder").write_text(str(os.getpid()))
    started = Install(folder, packages)
    started.start()
    return started


def _progress(proc: subprocess.Popen[bytes], folder: Path) -> tuple[int, ...]:
    """What npm has done so far: the bytes it has read and written, sockets included
    (``/proc/PID/io``: a download counts while it runs, though npm logs a fetch only
    once it is done), and the size of its output and debug log."""
    files = [folder / "npm.log", *(folder / "logs").glob("*")]
    logged = sum(f.stat().st_size for f in files if f.is_file())
    try:
        io = (Path("/proc") / str(proc.pid) / "io").read_text().split()
        moved = int(io[io.index("rchar:") + 1]) + int(io[io.index("wchar:") + 1])
    except (OSError, ValueError):
        moved = 0
    return logged, moved


def _exit_stall_or_stop(proc: subprocess.Popen[bytes], folder: Path,
                        stopped: threading.Event) -> int | None:
    """npm's exit code; or None once it has made no progress for `STALL_S` seconds, or
    is to be stopped."""
    done, since = _progress(proc, folder), time.monotonic()
    while (code := wait_exit(proc, 1.0)) is None:
        if stopped.is_set():
            return None
        now = _progress(proc, folder)
        if now != done:
            done, since = now, time.monotonic()
        elif time.monotonic() - since > STALL_S:
            return None
    return code


def _result(folder: Path) -> int | None:
    rc = folder / "npm.rc"
    return int(rc.read_text()) if rc.exists() else None


def _log_tail(folder: Path) -> str:
    log = folder / "npm.log"
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no output)"


def wait(folder: Path, timeout: float = TIMEOUT) -> Path:
    """``folder`` once its install succeeded; the test fails with npm's output when it
    failed, stopped without a result, or is still running after ``timeout`` seconds."""
    what = (folder / "npm.what").read_text()
    pid = int((folder / "npm.pid").read_text())
    recorder = int((folder / "npm.recorder").read_text())
    deadline = time.monotonic() + timeout
    while (code := _result(folder)) is None:
        if not alive(pid) and not alive(recorder):
            # Both gone: the exit code was written before the recorder ended, or never.
            if (code := _result(folder)) is None:
                pytest.fail(f"{what} stopped without a result: {_log_tail(folder)}",
                            pytrace=False)
            break
        if time.monotonic() > deadline:
            pytest.fail(f"{what} still running after {timeout:.0f} s: {_log_tail(folder)}",
                        pytrace=False)
        time.sleep(0.1)
    if code != 0:
        how = f"ended by signal {-code}" if code < 0 else f"failed (exit {code})"
        pytest.fail(f"{what} {how}: {_log_tail(folder)}", pytrace=False)
    return folder


def link_into(folder: Path, packages: Path) -> None:
    """Node finds the packages from scripts in ``folder`` (a test's own)."""
    (folder / "node_modules").symlink_to(packages / "node_modules", target_is_directory=True)


@pytest.fixture(scope="session")
def node_install(pytestconfig: pytest.Config) -> Callable[[], Path]:
    """Waits for the install and gives `node_packages`' folder: for a test with work of
    its own to do first, while the install runs."""
    require(NODE)
    _start(pytestconfig, list(PACKAGES))  # started already, unless no collected test used
    # this fixture
    return lambda: wait(_folder(pytestconfig))


@pytest.fixture(scope="session")
def node_packages(node_install: Callable[[], Path]) -> Path:
    """The folder whose ``node_modules`` holds `PACKAGES`, installed (see the module)."""
    return node_install()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the install as soon as a collected test is known to need it."""
    packages = _wanted(session.items)
    if packages and NODE.find():
        _start(session.config, packages)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{_MARK}(*packages): npm packages the test runs, from tests.node_packages."
        "PACKAGES (installed once per run, in the background; the node_packages fixture)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Nothing outlives the run: the install this process started has ended (waited
    for, since another worker may still need it; stopped if the run was interrupted)."""
    started = session.config.stash.get(_STARTED, None)
    if started is None:
        return
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        started.stop()
    started.thread.join(timeout=TIMEOUT)  # the thread waits for npm and reaps it
    if started.thread.is_alive():
        started.stop()
        started.thread.join()
    del session.config.stash[_STARTED]
