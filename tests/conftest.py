"""Shared fixtures of the self-tests: real, throwaway PostgreSQL clusters."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from opsgate.config import FLAG_DEFAULTS, VARIABLES
from opsgate.sandbox.embedded import EmbeddedPostgres
from tests.gate_helpers import MACHINE_VARIABLES
from tests.tools import PGBOUNCER, TOOLS, require

if TYPE_CHECKING:
    from xdist.remote import Producer
    from xdist.scheduler.protocol import Scheduling

#: The gate's variables, and where CI collects a Markdown summary (a self-test's inner
#: gate run must not append to the real one).
CONTRACT_ENV = (*(v for v in VARIABLES if v not in MACHINE_VARIABLES), *FLAG_DEFAULTS,
                "GITHUB_STEP_SUMMARY")


@pytest.fixture(scope="session")
def pg() -> Iterator[EmbeddedPostgres]:
    """One cluster per test process (each xdist worker has its own)."""
    with EmbeddedPostgres() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def pg_other() -> Iterator[EmbeddedPostgres]:
    """A second, independent cluster, for comparisons across servers."""
    with EmbeddedPostgres() as cluster:
        yield cluster


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No contract variable from the caller's environment leaks into a test."""
    for name in CONTRACT_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def fresh_db(pg: EmbeddedPostgres, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new empty database on the session cluster; yields its URL (revealed)."""
    import re
    import uuid

    name = "t_" + re.sub(r"[^a-z0-9]", "_", request.node.name.lower())[:30] + "_" + (
        uuid.uuid4().hex[:8]
    )
    url = pg.create_database(name)
    yield url.reveal()
    with pg.connect(autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_configure(config: pytest.Config) -> None:
    """pytester drives the plugin's self-tests. It is loaded here, for the self-tests
    only: a release gate never loads a test-only plugin."""
    _take_sigint_back()
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")
    config.pluginmanager.import_plugin("tests.node_packages")  # npm packages: one install
    config.addinivalue_line(
        "markers", "pgbouncer: needs the pgbouncer program (the Neon-shaped topology)")
    config.addinivalue_line(
        "markers", "needs(*tools): needs programs opsgate does not (tests.tools.TOOLS): "
        "missing, the test fails under CI=true and skips elsewhere")


def _take_sigint_back() -> None:
    """A run started in the background by a shell without job control (``nohup ... &``
    in a script) inherits SIGINT ignored, as POSIX has it so that Ctrl-C at the terminal
    spares it, and so does every process it starts: the stop self-tests then sent SIGINT
    to gates, drills and pg_dump that could not receive it, and five of them failed
    ("exit 0 after SIGINT"). CI's cancel delivers SIGINT, so the run takes it back
    (KeyboardInterrupt, Python's default), and its workers and children start with
    SIGINT's default action."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # a hook of xdist's: -p no:xdist works
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> Scheduling | None:
    """Work stealing instead of xdist's default ``load`` scheduling, unless another
    ``--dist`` was asked for. ``load`` hands out tests in batches and never takes one
    back: runs ended with one worker idle for 5 to 10 s while the other worked through
    the batch it still held. A worker that runs dry now takes half of the other's
    queue. xdist's own scheduler, chosen through xdist's hook for it."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import WorkStealingScheduling

    return WorkStealingScheduling(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker more than the CPUs this process may use. About a fifth
    of a run is waiting (servers starting, time-outs a test proves, npm, Chromium), and
    with one worker per CPU a CPU sat idle through each wait: with two CPUs, the
    self-tests used 159% of them with two workers, 191% with four."""
    return len(os.sched_getaffinity(0)) + 1


#: The caller's PYTHONDONTWRITEBYTECODE, while this run shares its bytecode instead.
_NO_BYTECODE = pytest.StashKey[str]()
#: Variables this run set for its processes, to unset when it ends.
_SET_HERE = pytest.StashKey[list[str]]()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Set, before the xdist workers start (tryfirst, before xdist's own sessionstart
    starts them; they and every process they start inherit it), what all of this run's
    processes share: a bytecode cache, and opsgate's cache folder."""
    config = session.config
    if hasattr(config, "workerinput"):
        return
    config.stash[_SET_HERE] = []
    _share_bytecode(config)
    _pin_cache_folder(config)


def _share_bytecode(config: pytest.Config) -> None:
    """With PYTHONDONTWRITEBYTECODE set, every interpreter the self-tests start (gate runs,
    the CLIs, sandboxes: well over a hundred) compiles the same modules from source again,
    and pytest rewrites the asserts of the same checks and plugins again, in each of
    them and in every in-process gate run. PYTHONPYCACHEPREFIX sends all of it to one
    folder of this run's temporary directory instead: nothing is written next to the
    sources, and the folder goes with pytest's other temporary files. A prefix of the
    caller's own, or an environment that writes bytecode anyway, is left alone."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    factory = config._tmp_path_factory  # type: ignore[attr-defined]
    config.stash[_NO_BYTECODE] = os.environ.pop("PYTHONDONTWRITEBYTECODE")
    os.environ["PYTHONPYCACHEPREFIX"] = str(factory.getbasetemp() / "pycache")
    config.stash[_SET_HERE].append("PYTHONPYCACHEPREFIX")


def _pin_cache_folder(config: pytest.Config) -> None:
    """opsgate's cache (the template clusters and sandboxes, `embedded.cache_dir`) stays
    the caller's own in every test. pytester points HOME at each test's temporary folder,
    so without this every test that runs a gate through it, and every process such a
    test starts, found an empty cache below that HOME: it ran initdb and built and saved
    the sandbox again (66 MB and several seconds of CPU each). Tests of the cache itself
    set OPSGATE_CACHE_DIR of their own; "off" from the caller is kept."""
    from opsgate.sandbox.embedded import cache_dir

    if os.environ.get("OPSGATE_CACHE_DIR", "").strip():
        return
    folder = cache_dir()
    if folder is not None:
        os.environ["OPSGATE_CACHE_DIR"] = str(folder)
        config.stash[_SET_HERE].append("OPSGATE_CACHE_DIR")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Everything alive once the tests are collected (pytest, hypothesis, opsgate and
    their modules, the collected items) lives until the end: out of the collector's
    reach (`gc.freeze`). Each full collection traversed all of it again; the workers
    spent 11.6 s of a run in the collector, and 6.7 s with this."""
    import gc

    gc.freeze()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The caller's environment and collector back as they were (pytest may run again in
    this process)."""
    import gc

    gc.unfreeze()
    for name in session.config.stash.get(_SET_HERE, []):
        os.environ.pop(name, None)
    value = session.config.stash.get(_NO_BYTECODE, None)
    if value is not None:
        os.environ["PYTHONDONTWRITEBYTECODE"] = value


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures build anything
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``needs("node", ...)`` (or ``pgbouncer``) needs programs opsgate
    does not: missing, it fails under CI and skips elsewhere (`tests.tools.require`)."""
    wanted = [TOOLS[name] for mark in item.iter_markers("needs") for name in mark.args]
    if item.get_closest_marker("pgbouncer") is not None:
        wanted.append(PGBOUNCER)
    for tool in wanted:
        require(tool)


def pytest_report_header() -> str:
    return f"opsgate self-tests; OPSGATE_PG_BINDIR={os.environ.get('OPSGATE_PG_BINDIR', '-')}"
