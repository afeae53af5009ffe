"""pytest fixtures the runbook checks use: the target's settings, a read-only database
session, the deployment's HTTP client and the evidence store.

Every fixture turns a missing variable into a failure that names it, and an unreachable
or misbehaving component into a failure that says what answered, never a traceback.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import allure
import httpx
import psycopg
import pytest

from opsgate.clients import db
from opsgate.clients import web as http
from opsgate.config import Settings
from opsgate.errors import (
    NOT_TRIED_AGAIN,
    DatabaseNotTriedAgain,
    DatabaseUnavailableError,
    MissingEnvError,
    first_line,
)
from opsgate.gate import BY_MARKER
from opsgate.pytest_plugin.plugin import EVIDENCE_KEY, get_state
from opsgate.sensitive import SecretUrl
from opsgate.verify.evidence_types import ConnectionLostAndRetried, EvidenceStore
from opsgate.verify.expectations import Expectations

STATEMENT_TIMEOUT_MS = 120_000


def fail(message: str, cause: BaseException | None = None) -> NoReturn:
    """Fail the check with one line: no traceback, and no "During handling of the above
    exception" chain when called from an ``except`` block; the location pytest reports
    is the check's line that called it, not this helper's.

    The error handled when it is called (or ``cause``, for a failure decided outside an
    ``except``) stays the failure's ``__context__``, never shown: the failure's kind is
    taken from its type (`opsgate.reports.failure_kinds`)."""
    __tracebackhide__ = True
    failure = pytest.fail.Exception(message, pytrace=False)
    if cause is not None:
        failure.__context__ = cause
    raise failure from None


#: A first connection slower than this is said at the end of the run: a Neon compute
#: that scaled to zero wakes on it (hundreds of milliseconds to seconds), and so does a
#: paused pooler; within the connect time-out it is no failure, but worth knowing.
SLOW_CONNECT_S = 1.0


def connect_read_only(url: SecretUrl, settings: Settings,
                      unreachable: dict[str, str] | None = None,
                      recovered: list[str] | None = None) -> db.ReadOnlySession:
    """A `db.ReadOnlySession`: no statement runs on it outside a transaction begun
    ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY``; its first statement begins the
    first, with the output settings and a statement timeout pinned to it (`arm`).

    Nothing is set on the session: through Neon's pooler the server connection is shared
    with the app, and a session ``SET`` would follow it there. A check reads one
    consistent snapshot; `release` ends it before long client-side work, and a statement
    after it is refused unless it begins a transaction of its own (`db.reading`).
    """
    # ``unreachable``: the run's record of targets that did not answer, so each later
    # check fails at once with the first line instead of connecting again.
    if unreachable is not None and url.masked in unreachable:
        seen = unreachable[url.masked]  # one cause in the reports: joined by type
        fail(seen + NOT_TRIED_AGAIN, DatabaseNotTriedAgain(seen + NOT_TRIED_AGAIN, seen))
    started = time.monotonic()
    try:
        conn = db.read_only_session(url, redact=settings.redactor())
    except DatabaseUnavailableError as exc:
        if unreachable is not None:
            unreachable[url.masked] = str(exc)
        fail(str(exc))
    if recovered is not None:
        note_slow_connect(recovered, url.masked, time.monotonic() - started)
    return arm(conn)


def note_slow_connect(recovered: list[str], where: str, waited: float) -> None:
    """A connection that took `SLOW_CONNECT_S` or more, said at the end of the run: no
    failure, but a reader of a slow run wants to know what it waited for."""
    if waited >= SLOW_CONNECT_S:
        recovered.append(
            f"{where} accepted the connection after {waited:.1f} s (connect time-out "
            f"{db.CONNECT_TIMEOUT_S} s): a Neon compute waking from scale to zero, or a "
            "paused pooler, takes this long")


@pytest.fixture
def slow_connects(pytestconfig: pytest.Config) -> Callable[[str, float], None]:
    """For a check that connects by itself (the drill, to the direct endpoint):
    ``slow_connects(masked_url, seconds)`` says a slow connection as `target_db` does."""
    recovered = get_state(pytestconfig).recovered
    return lambda where, waited: note_slow_connect(recovered, where, waited)


#: What every check's transaction pins (`db.pin_statement`), sent with its BEGIN.
CHECK_SETTINGS = db.pin_statement(statement_timeout_ms=STATEMENT_TIMEOUT_MS,
                                  application_name="opsgate-check")


def arm(conn: db.ReadOnlySession) -> db.ReadOnlySession:
    """``conn``, its next statement beginning a check's read-only transaction."""
    conn.begin_on_next_statement(CHECK_SETTINGS)
    return conn


@pytest.fixture(scope="session")
def ops_settings(pytestconfig: pytest.Config) -> Settings:
    return get_state(pytestconfig).settings


@pytest.fixture(scope="session")
def expectations(pytestconfig: pytest.Config) -> Expectations:
    """Expected production markers (OPSGATE_EXPECTATIONS_FILE, or the built-in floors)."""
    return get_state(pytestconfig).expectations


@pytest.fixture(scope="session")
def reports_root(pytestconfig: pytest.Config) -> Path:
    """Where this run's reports and the history of earlier runs live."""
    return Path(pytestconfig.getoption("reports_dir")
                or (pytestconfig.rootpath / "reports")).resolve()


@pytest.fixture(scope="session")
def project_root(pytestconfig: pytest.Config) -> Path:
    return pytestconfig.rootpath


def _require(fn: Any) -> Any:
    try:
        return fn()
    except MissingEnvError as exc:
        fail(str(exc))


@pytest.fixture(scope="session")
def _read_only_sessions() -> Iterator[dict[str, db.ReadOnlySession]]:
    """The run's read-only connections, by URL, which `target_db` hands from test to
    test: opening one costs about six network round trips (TLS, SCRAM, channel binding)
    before its first query, more than most checks' queries together. Between tests it
    holds no transaction, so through a transaction pooler it holds no server connection."""
    held: dict[str, db.ReadOnlySession] = {}
    yield held
    for conn in held.values():
        conn.close()


def _reuse(conn: db.ReadOnlySession | None) -> db.ReadOnlySession | None:
    """``conn``, armed for a fresh read-only transaction, or None if it cannot serve
    (closed, broken, or ended by the server while idle), found without a round trip: an
    idle connection has nothing to read unless the server said goodbye (``57P01``) or
    closed it."""
    if conn is None or conn.closed or conn.broken or db.in_transaction(conn):
        return None
    try:
        ready, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        ready = [True]
    if ready:
        conn.close()
        return None
    return arm(conn)


@contextlib.contextmanager
def run_session(settings: Settings, config: pytest.Config,
                sessions: dict[str, db.ReadOnlySession]) -> Iterator[db.ReadOnlySession]:
    """The run's read-only connection to DATABASE_URL (or POSTGRES_URL), armed for one
    read-only transaction, rolled back at the end, and handed back to ``sessions`` for
    the next test (or the next check's shared computation)."""
    url = _require(settings.require_database_url)
    key = url.reveal()
    with allure.step(f"connect: read-only session to {url.masked}"):
        state = get_state(config)
        conn = _reuse(sessions.pop(key, None)) or connect_read_only(
            url, settings, state.unreachable, state.recovered)
    try:
        yield conn
    finally:
        conn.opening = None  # a test that sent nothing leaves nothing armed
        if not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
        if conn.closed or conn.broken:
            conn.close()
            config.stash[_SESSIONS_LOST] = config.stash.get(_SESSIONS_LOST, 0) + 1
        else:
            sessions[key] = conn


#: How many of the run's read-only connections `run_session` dropped, ended by the
#: database, since the running test's call began: how the retry hook knows that a check
#: reading through `run_session` itself (blob fallback's comparison), not through
#: `target_db`, lost its connection.
_SESSIONS_LOST = pytest.StashKey[int]()


@pytest.fixture
def target_db(ops_settings: Settings, pytestconfig: pytest.Config,
              _read_only_sessions: dict[str, db.ReadOnlySession]
              ) -> Iterator[psycopg.Connection[Any]]:
    """Read-only transaction on DATABASE_URL (or POSTGRES_URL), begun with the test's
    first statement and rolled back at its end, on the run's connection to it
    (`_read_only_sessions`)."""
    with run_session(ops_settings, pytestconfig, _read_only_sessions) as conn:
        yield conn


@pytest.fixture
def deployment(ops_settings: Settings, pytestconfig: pytest.Config) -> Iterator[httpx.Client]:
    """HTTP client for OPS_BASE_URL: explicit timeout, no redirects, no retries on status."""
    base = _require(ops_settings.require_base_url)
    allure.dynamic.parameter("OPS_BASE_URL", base)
    with http.client(base, timeout=ops_settings.http_timeout,
                     unreachable=get_state(pytestconfig).unreachable) as client:
        yield client


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> EvidenceStore:
    """The check's evidence, attached to its report (and so to every report file): the
    typed records handed over with ``evidence.set``, by the test and its fixtures."""
    store = EvidenceStore()
    request.node.stash[EVIDENCE_KEY] = store
    return store


@pytest.fixture(autouse=True)
def _allure_labels(request: pytest.FixtureRequest) -> None:
    """Epic, feature, severity and check labels for every runbook check's Allure result."""
    spec = next((BY_MARKER[m.name] for m in request.node.iter_markers()
                 if m.name in BY_MARKER), None)
    if spec is None:
        return
    allure.dynamic.epic("runbook")
    allure.dynamic.feature(spec.title)
    allure.dynamic.label("check", spec.marker)
    allure.dynamic.severity(allure.severity_level.CRITICAL if spec.default_on
                            else allure.severity_level.NORMAL)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A read-only check whose connection the server ended mid-check (a Neon compute
    restarting: ``57P01 terminating connection due to administrator command``) runs
    once more, whole, on a new connection and a new snapshot; a second loss fails it in
    one line. Only checks that read through the run's read-only session (`target_db`,
    or `run_session` during the test) are tried again; a check that writes (the drill)
    never is. The loss is known by the connection, closed or broken, not by the error's
    text: `db` closes one the server ended under a pipeline that psycopg left open."""
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    store = item.stash.get(EVIDENCE_KEY, None)
    before = store.as_json() if store is not None else {}  # what the fixtures set
    item.config.stash[_SESSIONS_LOST] = 0
    try:
        return (yield)
    except psycopg.OperationalError as exc:
        if not _lost_its_session(item, funcargs):
            raise
        first = first_line(exc)
    if store is not None:
        store.rewind(before)  # the first attempt's records are of a snapshot no longer read
        store.set(ConnectionLostAndRetried(first))
    _once_more(item, funcargs, first)
    get_state(item.config).recovered.append(
        f"{item.nodeid}: the database ended its connection ({first}); tried once more on "
        "a new connection, and it passed")
    return None


def _lost_its_session(item: pytest.Item, funcargs: dict[str, Any]) -> bool:
    """The test's read-only session was ended: `target_db` closed or broken, or a
    connection of `run_session` dropped since the call began."""
    conn = funcargs.get("target_db")
    if isinstance(conn, psycopg.Connection) and (conn.broken or conn.closed):
        return True
    return item.config.stash.get(_SESSIONS_LOST, 0) > 0


def _once_more(item: pytest.Item, funcargs: dict[str, Any], first: str) -> None:
    """Run the test again: `target_db` replaced by a new connection (closed after it),
    while `run_session` connects anew by itself (the lost connection was dropped)."""
    fresh: db.ReadOnlySession | None = None
    if "target_db" in funcargs:
        state = get_state(item.config)
        url = state.settings.require_database_url()
        fresh = connect_read_only(url, state.settings, state.unreachable, state.recovered)
        funcargs["target_db"] = fresh
    item.config.stash[_SESSIONS_LOST] = 0
    try:
        item.runtest()
    except psycopg.OperationalError as again:
        if not _lost_its_session(item, funcargs):
            raise
        fail(f"the database ended this check's connection twice ({first}; then "
             f"{first_line(again)}); a read-only check is tried once more, no more")
    finally:
        if fresh is not None:
            fresh.close()
