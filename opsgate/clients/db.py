"""Connections and transactions that leave nothing behind on a shared server connection.

Production's ``DATABASE_URL`` is a PgBouncer endpoint in transaction mode: the server
connection a client talks to changes between transactions and is handed to the app's
own clients afterwards. So nothing opsgate needs may live in the session:

- every setting (read-only, timeouts, the canon-v1 output settings, even
  ``application_name``) is set inside the transaction that needs it (``BEGIN ... READ
  ONLY``, sent by opsgate on an autocommit connection: `transaction`,
  `ReadOnlySession`; and ``set_config(name, value, true)``, which ends with the
  transaction);
- no startup parameter is sent that PgBouncer would replay onto a server connection
  (``application_name`` is one it tracks);
- no prepared statement is ever created (``prepare_threshold=None``): on a pooler a
  statement prepared in one transaction is gone, or someone else's, in the next.

The same rules hold on a direct connection; they cost one round trip per transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import Any

import psycopg
from psycopg import IsolationLevel, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import Row

from opsgate.clients.session_settings import OUTPUT_SETTINGS
from opsgate.errors import DatabaseUnavailableError, first_line
from opsgate.sensitive import SecretUrl

__all__ = [
    "BEGIN_READ_ONLY",
    "CONNECT_TIMEOUT_S",
    "OUTPUT_SETTINGS",
    "ReadOnlySession",
    "connect",
    "count_rows",
    "host_of",
    "in_transaction",
    "is_pooler_host",
    "one_row",
    "pin",
    "pin_statement",
    "read_only_session",
    "reading",
    "release",
    "transaction",
]

CONNECT_TIMEOUT_S = 10



def host_of(url: SecretUrl | str) -> str:
    """The host a URL or libpq keyword string names ("" for a local socket), parsed by
    libpq's rules through psycopg rather than by hand."""
    raw = url.reveal() if isinstance(url, SecretUrl) else url
    try:
        params = conninfo_to_dict(raw)
    except psycopg.ProgrammingError:
        return ""
    return str(params.get("host") or "")


def is_pooler_host(url: SecretUrl | str) -> bool:
    """True for a Neon pooled endpoint: its first host label ends in ``-pooler``
    (``ep-name-123-pooler.region.aws.neon.tech``)."""
    return any(h.split(".", 1)[0].endswith("-pooler") for h in host_of(url).split(",") if h)


def connect(
    url: SecretUrl,
    *,
    redact: Callable[[str], str] = lambda s: s,
    what: str = "",
    autocommit: bool = True,
    application_name: str | None = None,
    connect_timeout: int = CONNECT_TIMEOUT_S,
    connection_class: type[psycopg.Connection[Any]] = psycopg.Connection,
) -> psycopg.Connection[Any]:
    """Connect with no prepared statements; a failure is one line naming the masked URL.

    ``application_name`` goes into the startup packet, so pass it only for a connection
    to a direct endpoint (the drill's, the runner's); on a pooled one use
    `transaction`'s parameter instead.
    """
    kwargs: dict[str, Any] = {}
    if application_name:
        kwargs["application_name"] = application_name[:63]
    stopped: KeyboardInterrupt | None = None
    try:
        conn = connection_class.connect(url.reveal(), connect_timeout=connect_timeout,
                                        autocommit=autocommit, prepare_threshold=None,
                                        **kwargs)
    except psycopg.Error as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to {what + ' ' if what else ''}{url.masked}: "
            f"{redact(first_line(exc))[:300]}"
        ) from None
    except KeyboardInterrupt as exc:
        # A stop during the handshake: psycopg's connection generator holds the
        # half-open libpq connection until it is collected, and the stop's traceback
        # holds the generator. The server then waits for the rest of the handshake
        # (authentication_timeout, 60 s), and a DROP DATABASE of that database waits
        # with it: a stopped drill's scratch copy stayed a minute. Without the
        # traceback the connection is closed here, and the stop goes on as itself.
        stopped = exc.with_traceback(None)
    if stopped is not None:
        raise stopped
    return conn


def in_transaction(conn: psycopg.Connection[Any]) -> bool:
    return conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


#: Pinned in every opsgate transaction with whatever else `pin` sets. A server-side
#: cursor (DECLARE) is planned by default for its first tenth of rows
#: (cursor_tuple_fraction 0.1): a plan that starts fast and can be quadratic over the
#: whole table. opsgate's cursors stream every row, so they are planned for the whole
#: result, as the same query without a cursor is.
PLAN_SETTINGS: tuple[tuple[str, str], ...] = (("cursor_tuple_fraction", "1"),)


def pin(
    conn: psycopg.Connection[Any],
    settings: Iterable[tuple[str, str]] = OUTPUT_SETTINGS,
    *,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
    application_name: str | None = None,
    begin: sql.Composable | None = None,
) -> None:
    """Set ``settings`` for the current transaction only, in one round trip (``begin``,
    a BEGIN statement for an autocommit connection, travels in the same simple query).

    On a non-autocommit connection this statement opens the transaction if none is
    open. On an autocommit one outside a transaction it refuses: ``set_config(...,
    true)`` would be lost at once and the caller would believe the settings held.
    """
    if conn.autocommit and not in_transaction(conn) and begin is None:
        raise psycopg.ProgrammingError("opsgate.clients.db.pin needs an open transaction")
    statement = pin_statement(settings, statement_timeout_ms=statement_timeout_ms,
                              lock_timeout_ms=lock_timeout_ms,
                              application_name=application_name)
    # A cursor of psycopg's own class: a `ReadOnlySession`'s guard would refuse the BEGIN.
    with psycopg.Cursor(conn) as cur:
        cur.execute(statement if begin is None else sql.SQL("; ").join([begin, statement]))


def pin_statement(
    settings: Iterable[tuple[str, str]] = OUTPUT_SETTINGS,
    *,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
    application_name: str | None = None,
) -> sql.Composed:
    """The one ``SELECT set_config(..., true), ...`` that `pin` sends."""
    pairs = list(settings)
    named = {name for name, _ in pairs}
    pairs += [p for p in PLAN_SETTINGS if p[0] not in named]
    if statement_timeout_ms is not None:
        pairs.append(("statement_timeout", str(int(statement_timeout_ms))))
    if lock_timeout_ms is not None:
        pairs.append(("lock_timeout", str(int(lock_timeout_ms))))
    if application_name:
        pairs.append(("application_name", application_name[:63]))
    calls = sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(n), sql.Literal(v))
        for n, v in pairs
    )
    return sql.SQL("SELECT {}").format(calls)


def count_rows(conn: psycopg.Connection[Any], tables: Iterable[str], schema: str = "public"
               ) -> dict[str, int | None]:
    """Exact row counts of ``tables`` in one round trip (None for a missing table).

    The server counts the tables that exist: ``query_to_xml`` runs each ``count(*)``
    from the catalog's own list, so a missing table is never named in the statement
    (which would fail it) and the client need not ask first which exist."""
    wanted = list(tables)
    counts: dict[str, int | None] = {t: None for t in wanted}
    found = conn.execute(
        "SELECT c.relname, query_to_xml(format('SELECT count(*) AS n FROM %%I.%%I', "
        "n.nspname, c.relname), false, true, '')::text "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')",
        (schema, wanted))
    for table, xml in found:
        number = _XML_COUNT.search(xml)
        if number is None:  # query_to_xml's format is PostgreSQL's own: never seen
            raise psycopg.DataError(f"count of {table}: unexpected answer {xml[:200]!r}")
        counts[str(table)] = int(number.group(1))
    return counts


_XML_COUNT = re.compile(r"<n>(\d+)</n>")


def one_row(cur: psycopg.Cursor[Row], what: str) -> Row:
    """The row of a statement that always returns one (an aggregate without GROUP BY, a
    SELECT without FROM, INSERT ... RETURNING); ``what`` names the statement. psycopg
    types `fetchone` as optional; here no row means the answer was lost on the way (a
    pooler, a server restarting), and it says so in one line instead of failing later
    on ``None``."""
    row = cur.fetchone()
    if row is None:
        raise DatabaseUnavailableError(
            f"{what}: the server answered with no row where one is always returned")
    return row


def release(conn: psycopg.Connection[Any]) -> None:
    """End the connection's open transaction, if any, by rolling it back: for a
    read-only connection about to do long client-side work (opsgate's transactions
    never stay open, idle, while the client computes)."""
    if in_transaction(conn) and not conn.closed:
        conn.rollback()


def reading(conn: psycopg.Connection[Any]) -> AbstractContextManager[Any]:
    """The caller's transaction when one is open (the drill hashes inside its exported
    snapshot), else a read-only transaction of our own, so that settings pinned with
    `pin` hold for the work and end with it."""
    if in_transaction(conn):
        return nullcontext()
    return transaction(conn, read_only=True, settings=())


@contextmanager
def transaction(
    conn: psycopg.Connection[Any],
    *,
    read_only: bool,
    isolation: IsolationLevel | None = None,
    settings: Iterable[tuple[str, str]] = OUTPUT_SETTINGS,
    statement_timeout_ms: int | None = None,
    application_name: str | None = None,
) -> Iterator[psycopg.Connection[Any]]:
    """One transaction on an autocommit connection, begun as ``BEGIN [ISOLATION LEVEL
    ...] READ ONLY|READ WRITE`` and pinned with `pin`; everything it set ends with it.

    Read-only is part of BEGIN itself, so a write fails at the server even through a
    pooler (a session ``SET`` followed by a statement may reach two different server
    connections there).
    """
    if in_transaction(conn):
        raise psycopg.ProgrammingError(
            "opsgate.clients.db.transaction must begin the transaction itself (found one open)")
    before = (conn.read_only, conn.isolation_level)
    conn.read_only = read_only
    conn.isolation_level = isolation
    try:
        if not conn.autocommit:  # psycopg sends a BEGIN of its own before any statement
            with conn.transaction():
                pin(conn, settings, statement_timeout_ms=statement_timeout_ms,
                    application_name=application_name)
                yield conn
            return
        # BEGIN and the settings as one simple query: one network round trip, where
        # psycopg's own BEGIN followed by `pin` waits out two.
        begin = _begin_statement(read_only, isolation)
        pin(conn, settings, statement_timeout_ms=statement_timeout_ms,
            application_name=application_name, begin=begin)
        if not in_transaction(conn):  # nothing to pin: the BEGIN alone
            with psycopg.Cursor(conn) as cur:
                cur.execute(begin)
        try:
            yield conn
        except BaseException:
            if not conn.closed:
                with suppress(psycopg.Error):
                    conn.rollback()
            raise
        conn.commit()
    except psycopg.Error as exc:
        _interrupted_mid_command(conn, exc)
        raise
    finally:
        if not conn.closed:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                # Stopped mid-command (ACTIVE), or a second stop landed during the
                # rollback (INTRANS, INERROR): psycopg refuses to change attributes then,
                # and that error would replace the stop. Nothing more can run on it.
                conn.close()
            else:
                conn.read_only, conn.isolation_level = before


def _interrupted_mid_command(conn: psycopg.Connection[Any], exc: psycopg.Error) -> None:
    """A stop (Ctrl-C, SIGTERM) that lands while a command runs leaves the connection
    busy; ending the transaction then fails ("another command is already in progress")
    and that error would take the stop's place, so a stopped check would read as
    failed. The connection is closed and the stop goes on."""
    stop = exc.__context__
    if isinstance(stop, KeyboardInterrupt):
        conn.close()
        raise stop from None


def _begin_statement(read_only: bool, isolation: IsolationLevel | None) -> sql.SQL:
    """What psycopg's ``conn.transaction()`` would send for these attributes."""
    level = ("" if isolation is None
             else f" ISOLATION LEVEL {isolation.name.replace('_', ' ')}")
    return sql.SQL(f"BEGIN{level} {'READ ONLY' if read_only else 'READ WRITE'}")


#: How a check's transaction begins: one consistent snapshot, and writes refused by the
#: server (through a pooler too: it is part of BEGIN, not a session setting).
BEGIN_READ_ONLY = sql.SQL("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")


class ReadOnlySession(psycopg.Connection[Any]):
    """An autocommit connection on which no statement runs outside a read-only
    transaction: its cursors refuse one sent while no transaction is open, unless
    `begin_on_next_statement` armed the next transaction, which then begins with that
    statement. Outside `transaction` (which begins its own), the only way in is the
    armed one, ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`` with its settings.

    Autocommit so that opsgate sends BEGIN itself: psycopg's own BEGIN on a connection
    that is not autocommit travels alone, a round trip of its own before the settings and
    another before the first statement. Here a plain statement goes out in one pipeline
    with BEGIN and the settings (one round trip for the three); a COPY, a stream or a
    server-side cursor waits out BEGIN and the settings, sent as one simple query, first.
    psycopg's attributes say read only and repeatable read too, so a ``conn.transaction()``
    on it (psycopg's own BEGIN) is read-only as well.
    """

    opening: sql.Composed | None = None

    def begin_on_next_statement(self, settings: sql.Composed) -> None:
        """The next statement sent outside a transaction begins one: read only,
        repeatable read, with ``settings`` (a `pin_statement`) pinned to it."""
        self.opening = settings

    @contextmanager
    def transaction(self, *args: Any, **kwargs: Any) -> Iterator[psycopg.Transaction]:
        """psycopg's, inside the armed transaction if one is armed (its settings would
        be missing from psycopg's own BEGIN); then a savepoint, as in any transaction."""
        if self.opening is not None:
            _begin_alone(self)
        with super().transaction(*args, **kwargs) as tx:
            yield tx


def read_only_session(url: SecretUrl, **kwargs: Any) -> ReadOnlySession:
    """`connect` for a `ReadOnlySession`: autocommit, guarded cursors."""
    conn = connect(url, autocommit=True, connection_class=ReadOnlySession, **kwargs)
    if not isinstance(conn, ReadOnlySession):  # made by connection_class: never seen
        raise TypeError(f"read_only_session: connect() made a {type(conn).__name__}")
    conn.read_only = True
    conn.isolation_level = IsolationLevel.REPEATABLE_READ
    conn.cursor_factory = _GuardedCursor
    conn.server_cursor_factory = _GuardedServerCursor
    return conn


def _opening(conn: psycopg.Connection[Any]) -> sql.Composed:
    """The armed opening of ``conn``'s next transaction (disarmed now), or a refusal."""
    if not isinstance(conn, ReadOnlySession) or conn.opening is None:
        raise psycopg.ProgrammingError(
            "opsgate: this read-only session refuses a statement outside a transaction "
            "(its transaction was released; begin one with opsgate.clients.db.reading)")
    opening, conn.opening = conn.opening, None
    return opening


def _begin_alone(conn: psycopg.Connection[Any]) -> None:
    """Begin the armed transaction now, BEGIN and settings in one simple query."""
    if not in_transaction(conn):
        opening = _opening(conn)
        with psycopg.Cursor(conn) as cur:
            cur.execute(sql.SQL("; ").join([BEGIN_READ_ONLY, opening]))


@contextmanager
def _one_round_trip(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """``conn.pipeline()``, except that a connection the server ended under it is closed
    and its loss goes on as itself.

    Through PgBouncer, the server's ``57P01 terminating connection`` reaches the client
    before the pooler closes the client's socket. psycopg raises it while the pipeline
    still owes the other statements' results, and then fails to leave pipeline mode
    ("cannot exit pipeline mode while busy"): that error replaced the 57P01, and the
    connection stayed open (neither ``broken`` nor ``closed``) though nothing can run on
    it again, so the run's retry of a read-only check did not see a lost connection."""
    try:
        with conn.pipeline():
            yield
    except psycopg.OperationalError as exc:
        lost = _session_ended(exc)
        if lost is None or conn.broken:  # not a loss, or one libpq saw itself
            raise
        conn.close()
        raise lost from None


def _session_ended(exc: psycopg.Error) -> psycopg.Error | None:
    """The server's error that ended the session, ``exc`` or the one it was raised while
    handling: severity FATAL or PANIC (57P01 administrator command, 57P02 crash
    shutdown, an idle session time-out), after which the server closes the connection.
    None for any other error."""
    for error in (exc, exc.__context__):
        if (isinstance(error, psycopg.Error)
                and error.diag.severity_nonlocalized in ("FATAL", "PANIC")):
            return error
    return None


class _GuardedCursor(psycopg.Cursor[Any]):
    """A `ReadOnlySession`'s client-side cursor (see there)."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        conn = self.connection
        if in_transaction(conn):
            return super().execute(*args, **kwargs)
        opening = _opening(conn)
        begin = psycopg.Cursor(conn)
        try:
            with _one_round_trip(conn):  # one Sync for the three
                begin.execute(BEGIN_READ_ONLY)
                begin.execute(opening)
                super().execute(*args, **kwargs)
        finally:
            begin.close()
        return self

    def executemany(self, *args: Any, **kwargs: Any) -> None:
        _begin_alone(self.connection)
        super().executemany(*args, **kwargs)

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        _begin_alone(self.connection)
        yield from super().stream(*args, **kwargs)

    @contextmanager
    def copy(self, *args: Any, **kwargs: Any) -> Iterator[psycopg.Copy]:
        _begin_alone(self.connection)
        with super().copy(*args, **kwargs) as copy:
            yield copy


class _GuardedServerCursor(psycopg.ServerCursor[Any]):
    """A `ReadOnlySession`'s server-side cursor: DECLARE inside the transaction."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        _begin_alone(self.connection)
        return super().execute(*args, **kwargs)
