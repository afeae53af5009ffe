"""A table hash read in key ranges over two connections gives the one COPY's bytes.

`opsgate.verify.tablehash` splits a large table by primary-key ranges, receives the
ranges over connections that share one exported snapshot, and hashes them in key order
(ranges received ahead of their turn wait in a spool). The hash must be the single
COPY's, and psql's, whatever the key's type, collation, shape or distribution; the
ranges must see one snapshot; and nothing may be left behind: no setting, no
connection, no file.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from opsgate.errors import ConfigError
from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.sensitive import SecretUrl
from opsgate.verify import canon, tablehash


@pytest.fixture
def url(fresh_db: str) -> SecretUrl:
    """The fresh database's URL, kept secret: a failing test's traceback shows its
    functions' arguments."""
    return SecretUrl(fresh_db)


@pytest.fixture
def db(url: SecretUrl) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url.reveal(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many ranges on small tables: every range boundary is a chance to get one wrong."""
    monkeypatch.setattr(tablehash, "RANGE_BYTES", 16 << 10)


def parallel(conn: psycopg.Connection[Any], table: str) -> tuple[canon.TableHash,
                                                                   tablehash.HashRead]:
    return tablehash.table_hash_read(conn, table, connections=2, min_parallel_bytes=0)


def single(conn: psycopg.Connection[Any], table: str) -> canon.TableHash:
    h, read = tablehash.table_hash_read(conn, table, connections=1)
    assert read.ranges == 1
    return h


def via_psql(pg: EmbeddedPostgres, url: SecretUrl, conn: psycopg.Connection[Any],
             table: str) -> canon.TableHash:
    columns, order_by = canon.table_shape(conn, table)
    return tablehash.table_hash_via_psql(
        pg.binaries.tool("psql"), url.without_password,
        {**os.environ, "PGPASSWORD": url.password or ""}, table, columns, order_by)


def assert_same_three_ways(pg: EmbeddedPostgres, url: SecretUrl, conn: psycopg.Connection[Any],
                           table: str, *, min_ranges: int = 2) -> tablehash.HashRead:
    h, read = parallel(conn, table)
    assert read.ranges >= min_ranges, read
    assert sum(read.by_connection) == read.ranges and read.by_connection[1] > 0, read
    assert h == single(conn, table) == via_psql(pg, url, conn, table)
    return read


@pytest.fixture
def helper_joins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's connection waits, after its first range, until the other connection
    has taken one: without it a quick caller may take every range of a small table
    before the helper has connected, and the test would prove nothing about sharing."""
    claim = tablehash._Ranges.claim

    def patient(self: Any, who: int) -> int | None:
        i = claim(self, who)
        if who == 0 and i is not None and i > 0:
            deadline = time.monotonic() + 10
            while self.by_connection(2)[1] == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
        return i

    monkeypatch.setattr(tablehash._Ranges, "claim", patient)


@pytest.mark.usefixtures("small_ranges", "helper_joins")
def test_integer_key_ranges_hash_like_one_copy_and_psql(
        pg: EmbeddedPostgres, url: SecretUrl, db: psycopg.Connection[Any]) -> None:
    db.execute("CREATE TABLE t (id bigint PRIMARY KEY, label text, score float8, "
               "at timestamptz, raw bytea, body jsonb)")
    db.execute("INSERT INTO t SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE E'r\\t' || g END, "
               "g / 3.0, '2026-01-01'::timestamptz + g * interval '1 min', "
               "decode(md5(g::text), 'hex'), jsonb_build_object('g', g) "
               "FROM generate_series(-5000, 15000) g")
    read = assert_same_three_ways(pg, url, db, "t", min_ranges=8)
    assert read.by_connection[1] > 0 and read.spooled_bytes > 0, read


@pytest.mark.usefixtures("small_ranges", "helper_joins")
@pytest.mark.parametrize("collation", ["C", "und-x-icu", "sv-x-icu"])
def test_text_key_with_non_ascii_values_in_the_column_collation(
        pg: EmbeddedPostgres, url: SecretUrl, db: psycopg.Connection[Any],
        collation: str) -> None:
    """Split keys are compared as the ORDER BY compares: with the column's collation,
    where 'a' < 'B' (ICU) or 'B' < 'a' (C), and Swedish puts 'ä' after 'z'."""
    if not db.execute("SELECT 1 FROM pg_collation WHERE collname = %s",
                      (collation,)).fetchone():
        pytest.skip(f"collation {collation} not available on this server")
    db.execute(sql.SQL("CREATE TABLE t (k text COLLATE {} PRIMARY KEY, n int)").format(
        sql.Identifier(collation)))
    words = ["a", "B", "ä", "z", "Z", "å", "ö", "é", "E", "ß", "ss", "Straße", "日本", "😀",
             "Ω", "a b", "a-b", "ab", "tab\there", "new\nline", "back\\slash", "\u00a0nbsp"]
    db.execute("INSERT INTO t SELECT w || '-' || g, g FROM unnest(%s::text[]) w, "
               "generate_series(1, 400) g", (words,))
    assert_same_three_ways(pg, url, db, "t", min_ranges=4)


@pytest.mark.usefixtures("small_ranges", "helper_joins")
def test_composite_key_with_few_values_in_its_first_column(
        pg: EmbeddedPostgres, url: SecretUrl, db: psycopg.Connection[Any]) -> None:
    """Split keys are whole keys compared as row values, (a, b) >= (x, y): the first
    column alone (three values) could not cut this table in eight."""
    db.execute('CREATE TABLE t (kind text, id int, note text COLLATE "und-x-icu", '
               "PRIMARY KEY (kind, id, note))")
    db.execute("INSERT INTO t SELECT k, g % 50, 'n' || g FROM unnest(ARRAY['x', 'Y', 'é']) k, "
               "generate_series(1, 4000) g")
    assert_same_three_ways(pg, url, db, "t", min_ranges=8)


KEY_TYPES = {
    "bytea": "decode(md5(g::text), 'hex')",
    "uuid": "md5(g::text)::uuid",
    "timestamptz": "'2026-01-01 00:00:00.123456+05:45'::timestamptz + g * interval '997 s'",
    "date": "'1999-12-31'::date + g",
    "numeric": "(g * 1.37)::numeric(20, 5) - 3000",
    "double precision": "CASE WHEN g = 1 THEN '-Infinity'::float8 ELSE g / 7.0::float8 - 1000 END",
    "interval": "g * interval '1 min 1.5 s'",
    "inet": "'10.0.0.0'::inet + g * 65",
    "varchar(40)": "md5(g::text)",
}


@pytest.mark.usefixtures("small_ranges", "helper_joins")
@pytest.mark.parametrize("key_type", sorted(KEY_TYPES))
def test_keys_of_other_types_split_where_their_text_reads_back(
        pg: EmbeddedPostgres, url: SecretUrl, db: psycopg.Connection[Any],
        key_type: str) -> None:
    """Split keys travel as text and are read back by the other connection as the key's
    type, under the pinned settings whatever the session's own (here a DateStyle and a
    zone that print timestamps otherwise)."""
    db.execute(f"CREATE TABLE t (k {key_type} PRIMARY KEY, g int)")
    db.execute(f"INSERT INTO t SELECT {KEY_TYPES[key_type]}, g FROM generate_series(1, 8000) g")
    db.execute("SET DateStyle = 'SQL, DMY'")
    db.execute("SET TimeZone = 'America/St_Johns'")
    db.execute("SET extra_float_digits = 0")
    assert_same_three_ways(pg, url, db, "t", min_ranges=4)


@pytest.mark.usefixtures("small_ranges", "helper_joins")
def test_a_key_whose_ordering_comes_from_an_extension_off_the_search_path(
        pg: EmbeddedPostgres, url: SecretUrl, db: psycopg.Connection[Any]) -> None:
    """citext sorts case-insensitively ('a' < 'B' < 'c', where text in C puts 'B'
    first); installed in a schema the session does not search, an unqualified ``>=``
    would compare its values as text. The ranges use the key's own operators, named
    with their schema."""
    if not db.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'citext'"
                      ).fetchone():
        pytest.skip("the citext extension is not installed on this server")
    db.execute("CREATE SCHEMA ext")
    db.execute("CREATE EXTENSION citext SCHEMA ext")
    db.execute("CREATE TABLE t (k ext.citext PRIMARY KEY, n int)")
    db.execute("INSERT INTO t SELECT chr(65 + g % 26 + (g % 2) * 32) || g, g "
               "FROM generate_series(1, 20000) g")
    assert_same_three_ways(pg, url, db, "t", min_ranges=4)


@pytest.mark.usefixtures("small_ranges", "helper_joins")
def test_an_operator_of_the_callers_search_path_is_not_the_keys(
        pg: EmbeddedPostgres, url: SecretUrl, db: psycopg.Connection[Any]) -> None:
    """The caller's session searches a schema whose ``>=`` and ``<`` on integers are
    reversed; the helper's session does not. Both compare with pg_catalog's."""
    db.execute("CREATE SCHEMA odd")
    db.execute("CREATE FUNCTION odd.ge(int, int) RETURNS bool LANGUAGE sql IMMUTABLE "
               "AS 'SELECT $1 <= $2'")
    db.execute("CREATE FUNCTION odd.lt(int, int) RETURNS bool LANGUAGE sql IMMUTABLE "
               "AS 'SELECT $1 > $2'")
    db.execute("CREATE OPERATOR odd.>= (LEFTARG = int, RIGHTARG = int, FUNCTION = odd.ge)")
    db.execute("CREATE OPERATOR odd.< (LEFTARG = int, RIGHTARG = int, FUNCTION = odd.lt)")
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    db.execute("SET search_path = odd, pg_catalog, public")
    assert db.execute("SELECT 2 >= 1").fetchone() == (False,)
    assert_same_three_ways(pg, url, db, "t", min_ranges=4)


def test_a_temporary_table_keeps_one_copy(db: psycopg.Connection[Any]) -> None:
    """Another session cannot read this session's temporary table."""
    db.execute("CREATE TEMP TABLE t (id int PRIMARY KEY)")
    db.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    schema = db.execute("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()"
                        ).fetchone()[0]  # type: ignore[index]
    h, read = tablehash.table_hash_read(db, "t", schema, connections=2, min_parallel_bytes=0)
    assert read.note == "a temporary table" and h.rows == 1000


@pytest.mark.usefixtures("small_ranges", "helper_joins")
def test_skewed_keys(pg: EmbeddedPostgres, url: SecretUrl, db: psycopg.Connection[Any]) -> None:
    """Nearly every key in a narrow band, a few far away on both sides, duplicates of
    nothing: the sample's quantiles fall where the rows are."""
    db.execute("CREATE TABLE t (id numeric PRIMARY KEY, pad text)")
    db.execute("INSERT INTO t SELECT 1000 + g / 1000.0, repeat('p', g % 40) "
               "FROM generate_series(1, 20000) g")
    db.execute("INSERT INTO t VALUES (-1e30, 'far'), (1e30, 'far'), (0, 'zero'), "
               "('NaN', 'nan')")
    assert_same_three_ways(pg, url, db, "t", min_ranges=4)


@pytest.mark.usefixtures("small_ranges", "helper_joins")
def test_absent_and_stale_statistics_do_not_matter(
        pg: EmbeddedPostgres, url: SecretUrl, db: psycopg.Connection[Any]) -> None:
    """Split keys come from a sample read in the hash's own snapshot, not pg_stats."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    db.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    assert db.execute("SELECT count(*) FROM pg_stats WHERE tablename = 't'").fetchone() == (0,)
    assert_same_three_ways(pg, url, db, "t")  # never analysed
    db.execute("ANALYZE t")
    db.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(5001, 30000) g")
    db.execute("DELETE FROM t WHERE id < 2500")
    assert_same_three_ways(pg, url, db, "t")  # stats describe a quarter of it


@pytest.mark.parametrize("rows", [0, 1])
def test_empty_and_one_row_tables(pg: EmbeddedPostgres, url: SecretUrl,
                                  db: psycopg.Connection[Any], rows: int) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO t SELECT g, 'v' FROM generate_series(1, %s) g", (rows,))
    h, read = parallel(db, "t")
    assert read.ranges == 1 and read.note == "no split key in the sample"
    assert h == single(db, "t") == via_psql(pg, url, db, "t")
    assert h.rows == rows


def test_small_tables_and_tables_without_a_key_keep_one_copy(
        db: psycopg.Connection[Any]) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    db.execute("CREATE TABLE nokey (v int)")
    db.execute("INSERT INTO t SELECT generate_series(1, 100)")
    db.execute("INSERT INTO nokey SELECT generate_series(1, 100)")
    assert tablehash.table_hash_read(db, "t")[1].note.endswith(
        f"under {tablehash.PARALLEL_MIN_BYTES}")
    assert parallel(db, "nokey")[1].note == "no primary key"
    with db.transaction():
        assert parallel(db, "t")[1].note == "the caller's transaction"


@pytest.mark.usefixtures("small_ranges")
def test_a_row_changed_in_a_later_range_changes_the_hash(db: psycopg.Connection[Any]) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20000) g")
    before, read = parallel(db, "t")
    assert read.ranges >= 4
    db.execute("UPDATE t SET v = 'changed' WHERE id = 19999")
    after, _ = parallel(db, "t")
    assert after.sha256 != before.sha256 and after.rows == before.rows
    assert after == single(db, "t")


@pytest.mark.usefixtures("small_ranges")
def test_every_range_reads_one_snapshot(url: SecretUrl, db: psycopg.Connection[Any],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A write committed after the first range started and before the others start
    (an update in the last range, an insert, a delete) is seen by none of them."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20000) g")
    expected = single(db, "t")
    claim = tablehash._Ranges.claim
    written = threading.Event()

    def write_after_the_first(self: Any, who: int) -> int | None:
        i = claim(self, who)
        if i == 1 and not written.is_set():
            with psycopg.connect(url.reveal(), autocommit=True) as other:
                other.execute("UPDATE t SET v = 'late' WHERE id = 19990")
                other.execute("INSERT INTO t VALUES (20001, 'late'), (0, 'late')")
                other.execute("DELETE FROM t WHERE id = 10000")
            written.set()
        return i

    monkeypatch.setattr(tablehash._Ranges, "claim", write_after_the_first)
    h, read = parallel(db, "t")
    assert written.is_set() and read.ranges >= 4
    assert h == expected
    monkeypatch.undo()
    assert single(db, "t").sha256 != expected.sha256


def other_backends(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                       "current_database() AND pid <> pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.usefixtures("small_ranges", "helper_joins")
def test_nothing_remains_on_the_connection_the_server_or_the_disk(
        db: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO t SELECT g, repeat('v', 50) FROM generate_series(1, 30000) g")
    db.execute("SET TimeZone = 'Asia/Kathmandu'")
    db.execute("SET DateStyle = 'SQL, DMY'")
    db.execute("SET extra_float_digits = 0")
    names = [k for k, _ in canon.TABLE_SESSION_SETTINGS]
    show = sql.SQL(", ").join(sql.SQL("current_setting({})").format(sql.Literal(k))
                              for k in names)
    settings_before = db.execute(sql.SQL("SELECT {}").format(show)).fetchone()
    _, read = parallel(db, "t")
    assert read.by_connection[1] > 0 and read.spooled_bytes > 0, read
    assert db.execute(sql.SQL("SELECT {}").format(show)).fetchone() == settings_before
    assert db.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert (db.read_only, db.isolation_level) == (None, None)
    deadline = time.monotonic() + 10
    while other_backends(db) and time.monotonic() < deadline:
        time.sleep(0.02)  # a closed connection's backend ends a moment later
    assert other_backends(db) == 0
    assert not db.execute("SELECT count(*) FILTER (WHERE NOT granted) + count(*) FILTER "
                          "(WHERE locktype = 'virtualxid' AND pid <> pg_backend_pid()) "
                          "FROM pg_locks").fetchone()[0]  # type: ignore[index]
    assert list(tmp_path.iterdir()) == []
    assert not [fd for fd in os.listdir("/proc/self/fd")
                if os.path.realpath(f"/proc/self/fd/{fd}").startswith(str(tmp_path))]


def failing_in(thread_prefix: str) -> Callable[..., int]:
    receive = tablehash._receive_copy

    def receive_or_fail(conn: Any, emit: Any) -> int:
        if threading.current_thread().name.startswith(thread_prefix):
            raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
        return receive(conn, emit)

    return receive_or_fail


@pytest.mark.usefixtures("small_ranges", "helper_joins")
def test_a_failure_on_the_other_connection_fails_the_hash_and_leaves_nothing(
        db: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO t SELECT g, repeat('v', 50) FROM generate_series(1, 30000) g")
    monkeypatch.setattr(tablehash, "_receive_copy", failing_in("opsgate-hash-"))
    with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
        parallel(db, "t")
    assert db.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert db.execute("SELECT 1").fetchone() == (1,)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert parallel(db, "t")[0] == single(db, "t")


@pytest.mark.usefixtures("small_ranges")
def test_a_slow_range_holds_the_others_back_a_few_ranges_ahead(
        db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """While the range being hashed is slow to come, the other connection takes at most
    `_MAX_AHEAD` ranges ahead of it, so the spool stays a few ranges whatever the
    table's size.

    Proven by an event, not by waiting a while to see nothing happen: the first range's
    receiver holds back until the other connection is seen waiting in `claim` while the
    hasher waits for this very range (it cannot move before this range comes), and only
    then counts the ranges taken ahead. Without the limit it would never wait there, and
    the test fails. (Waiting in `claim` while the hasher was still behind on earlier
    ranges is no proof: a slow hasher then catches up, and fewer are ahead once it
    does; seen once in CI, 1 ahead instead of 4.)"""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 30000) g")
    receive = tablehash._receive_copy
    seen: list[int] = []
    state: dict[str, Any] = {}
    blocked = threading.Event()  # the other connection waits in claim, refused a range
    claiming = threading.local()

    def ahead() -> int:  # ranges taken beyond the first one not yet hashed
        ranges = state["ranges"]
        return int(ranges._next - 1 - ranges._head)

    class Watched(threading.Condition):
        def wait(self, timeout: float | None = None) -> bool:
            # The other connection in claim once the ranges are planned: it waits only
            # for the hasher then.
            ranges = state.get("ranges")
            if getattr(claiming, "now", False) and ranges is not None and ranges._started \
                    and threading.current_thread() is not threading.main_thread() \
                    and ranges._head == state.get("held"):
                blocked.set()
            return super().wait(timeout)

    def slow_first(conn: Any, emit: Any) -> int:
        if threading.current_thread() is threading.main_thread() and not seen:
            assert blocked.wait(10), f"the other connection never waited ({ahead()} ahead)"
            seen.append(ahead())
        return receive(conn, emit)

    start = tablehash._Ranges.start
    claim = tablehash._Ranges.claim
    init = tablehash._Ranges.__init__

    def remember(self: Any, queries: Any) -> None:
        state["ranges"] = self
        start(self, queries)

    def watched_claim(self: Any, who: int) -> int | None:
        claiming.now = True
        try:
            taken = claim(self, who)
        finally:
            claiming.now = False
        if threading.current_thread() is threading.main_thread() and "held" not in state:
            state["held"] = taken  # the range its first receive holds back
        return taken

    def watched_init(self: Any) -> None:
        init(self)
        self._cond = Watched()

    monkeypatch.setattr(tablehash, "_receive_copy", slow_first)
    monkeypatch.setattr(tablehash._Ranges, "start", remember)
    monkeypatch.setattr(tablehash._Ranges, "claim", watched_claim)
    monkeypatch.setattr(tablehash._Ranges, "__init__", watched_init)
    h, read = parallel(db, "t")
    assert seen == [tablehash._MAX_AHEAD]
    assert read.ranges > tablehash._MAX_AHEAD + 2
    monkeypatch.undo()
    assert h == single(db, "t")


@pytest.mark.usefixtures("small_ranges")
def test_a_connection_that_cannot_join_leaves_the_work_to_the_caller(
        url: SecretUrl, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused (here a wrong password), the helper takes no range: same hash, one
    connection's time, and the reason, without the password."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20000) g")
    real = tablehash.sibling_conninfo
    monkeypatch.setattr(tablehash, "sibling_conninfo",
                        lambda conn: real(conn) + " password=not-the-password-Xq9")
    h, read = parallel(db, "t")
    assert read.by_connection[1] == 0 and read.ranges >= 4
    assert "could not connect" in read.note and "Xq9" not in read.note
    password = url.password
    assert password and password not in read.note
    assert h == single(db, "t")


def test_the_sibling_connection_reaches_the_same_server_as_the_caller(
        url: SecretUrl, db: psycopg.Connection[Any]) -> None:
    info = psycopg.conninfo.conninfo_to_dict(tablehash.sibling_conninfo(db))
    assert (info["host"], info["port"], info["dbname"]) == (
        db.info.host, str(db.info.port), db.info.dbname)
    with psycopg.connect(tablehash.sibling_conninfo(db)) as other:
        assert other.info.backend_pid != db.info.backend_pid


def test_hash_connections_from_the_environment() -> None:
    assert tablehash.hash_connections({}) == tablehash.DEFAULT_CONNECTIONS == 2
    assert tablehash.hash_connections({"OPSGATE_HASH_CONNECTIONS": " 3 "}) == 3
    assert tablehash.hash_connections({"OPSGATE_HASH_CONNECTIONS": "1"}) == 1
    for bad in ("0", "two", "99", "-1"):
        with pytest.raises(ConfigError, match="OPSGATE_HASH_CONNECTIONS"):
            tablehash.hash_connections({"OPSGATE_HASH_CONNECTIONS": bad})
