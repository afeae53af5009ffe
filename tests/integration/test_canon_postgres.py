"""canon-v1 against real PostgreSQL: jsonb round trips and table hashes across servers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from opsgate.errors import CanonError
from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.verify import canon, tablehash
from tests.strategies import json_values, payloads

DB_SETTINGS = settings(max_examples=40, deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def doc_conn(pg: EmbeddedPostgres) -> Any:
    with pg.connect(autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE docs (id serial PRIMARY KEY, body jsonb)")
        yield conn


@DB_SETTINGS
@given(doc=st.one_of(payloads(), json_values))
def test_jsonb_round_trip_hashes_like_the_file(doc_conn: Any, doc: Any, tmp_path_factory: Any) -> None:
    path = tmp_path_factory.mktemp("doc") / "payload.json"
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    from_file = json.loads(path.read_text(encoding="utf-8"))
    row = doc_conn.execute(
        "INSERT INTO docs (body) VALUES (%s::jsonb) RETURNING body",
        (path.read_text(encoding="utf-8"),),
    ).fetchone()
    assert canon.document_hash(row[0]) == canon.document_hash(from_file)


ROWS = st.lists(
    st.tuples(
        st.integers(1, 10_000),
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                max_size=20),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        st.datetimes(timezones=st.timezones()),
        json_values,
    ),
    min_size=1, max_size=25, unique_by=lambda r: r[0],
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sample (
    id integer PRIMARY KEY, label text, score double precision,
    seen_at timestamptz, body jsonb
)
"""


def _load(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]], tz: str) -> None:
    conn.execute(SCHEMA)
    conn.execute("TRUNCATE sample")
    conn.execute(f"SET TimeZone = '{tz}'")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sample VALUES (%s, %s, %s, %s, %s)",
            [(i, t, f, d, Jsonb(j)) for i, t, f, d, j in rows],
        )


@DB_SETTINGS
@given(rows=ROWS, rnd=st.randoms(use_true_random=False), data=st.data())
def test_table_hash_equal_on_two_clusters_and_sensitive_to_one_row(
    pg: EmbeddedPostgres, pg_other: EmbeddedPostgres, rows: Any, rnd: Any, data: Any
) -> None:
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    with pg.connect(autocommit=True) as a, pg_other.connect(autocommit=True) as b:
        _load(a, rows, "UTC")
        _load(b, shuffled, "America/New_York")  # other insertion order, other session zone
        ha, hb = canon.table_hash(a, "sample"), canon.table_hash(b, "sample")
        assert ha == hb
        assert ha.rows == len(rows)

        victim = data.draw(st.sampled_from(rows))[0]
        b.execute("UPDATE sample SET label = coalesce(label, '') || '!' WHERE id = %s",
                  (victim,))
        hc = canon.table_hash(b, "sample")
        assert hc.sha256 != ha.sha256 and hc.rows == ha.rows


def test_table_hash_is_what_psql_copy_gives(pg: EmbeddedPostgres) -> None:
    """An auditor can recompute the hash with psql and sha256sum (docs/canonical-hashing.md)."""
    with pg.connect(autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("TRUNCATE sample")
        conn.execute("INSERT INTO sample SELECT g, 'l' || g, g / 7.0, "
                     "'2026-02-11 14:38:00-05' , jsonb_build_object('g', g) "
                     "FROM generate_series(1, 500) g")
        h = canon.table_hash(conn, "sample")
    # The recipe of the docs, word for word: SET LOCAL inside one transaction (-1), so
    # that through a pooler nothing outlives it.
    sets = [a for k, v in canon.TABLE_SESSION_SETTINGS if k != "client_encoding"
            for a in ("-c", f"SET LOCAL {k} = '{v}'")]
    psql = pg.binaries.tool("psql")
    out = subprocess.run(
        [str(psql), "-X", "-q", "-1", "-d", pg.url().reveal(), *sets, "-c",
         "COPY (SELECT body, id, label, score, seen_at FROM sample ORDER BY id) TO STDOUT"],
        capture_output=True, check=True, env={**os.environ, "PGCLIENTENCODING": "UTF8"},
    ).stdout
    assert hashlib.sha256(out).hexdigest() == h.sha256
    doc = (Path(__file__).resolve().parents[2] / "docs" / "canonical-hashing.md").read_text()
    assert all(f"SET LOCAL {k}" in doc for k, _ in canon.TABLE_SESSION_SETTINGS
               if k != "client_encoding")


def test_table_hash_streams_in_constant_memory(pg: EmbeddedPostgres) -> None:
    """The COPY stream arrives in chunks far smaller than the table."""
    with pg.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS big (id int PRIMARY KEY, pad text)")
        conn.execute("TRUNCATE big")
        conn.execute("INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 50000) g")
        largest = max(len(c) for c in canon.iter_table_copy(conn, "big"))
        total = canon.table_hash(conn, "big").bytes
    assert total > 10_000_000
    assert largest < 1_000_000


def test_missing_table_is_a_clear_error(pg: EmbeddedPostgres) -> None:
    with pg.connect(autocommit=True) as conn, pytest.raises(CanonError, match="nope"):
        canon.table_hash(conn, "nope")


#: canon-v1 table bytes are frozen: these digests were taken before the hash's receiving
#: side was rewritten (threaded hashing, large buffers) and must never change. The table
#: is built with every awkward case of COPY text: tabs, newlines, backslashes, NULLs,
#: non-ASCII, floats, zones, jsonb, bytea; and over 1 MiB, so several hash buffers.
PINNED_TABLE = """
CREATE TABLE pinned (id bigint PRIMARY KEY, label text, score double precision,
                     seen_at timestamptz, body jsonb, raw bytea)
"""
PINNED_ROWS = """
INSERT INTO pinned SELECT g,
  CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN E'tab\\there\\nnew' WHEN 2 THEN 'back\\slash'
             WHEN 3 THEN 'ünïcødé ✓' ELSE repeat('p', g % 300) END,
  g / 7.0, '2026-02-11 14:38:00+00'::timestamptz + g * interval '37 seconds',
  jsonb_build_object('g', g, 'half', g / 2.0, 'list', jsonb_build_array(g, 'x')),
  decode(md5(g::text), 'hex')
FROM generate_series(1, 20000) g
"""
PINNED_SHA256 = "0812e88dc928c973c4911d91db54ac0ef75d88d5eb879daaf029fb3cde5efc9c"
PINNED_BYTES = 3_707_945


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kathmandu"])
def test_table_hash_is_pinned(pg: EmbeddedPostgres, zone: str) -> None:
    with pg.connect(autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS pinned")
        conn.execute(PINNED_TABLE)
        conn.execute(PINNED_ROWS)
        conn.execute(f"SET TimeZone = '{zone}'")  # the caller's session zone is ignored
        h = canon.table_hash(conn, "pinned")
        columns, order_by = canon.table_shape(conn, "pinned")
        url = pg.url()
        via_psql = tablehash.table_hash_via_psql(
            pg.binaries.tool("psql"), url.without_password,
            {**os.environ, "PGPASSWORD": url.password or "", "PGTZ": zone}, "pinned",
            columns, order_by)
        conn.execute("DROP TABLE pinned")
    assert (h.sha256, h.rows, h.bytes) == (PINNED_SHA256, 20000, PINNED_BYTES)
    assert via_psql == h


def test_psql_hash_failure_is_one_line_without_the_password(pg: EmbeddedPostgres) -> None:
    url = pg.url()
    with pytest.raises(CanonError, match=r"^psql COPY of public.nope failed \(exit \d\): .*nope") as err:
        tablehash.table_hash_via_psql(
            pg.binaries.tool("psql"), url.without_password,
            {**os.environ, "PGPASSWORD": url.password or ""}, "nope", ("id",), ("id",))
    assert url.password and url.password not in str(err.value)


def test_a_copy_cut_short_by_the_server_raises_its_error_and_the_connection_recovers(
        pg: EmbeddedPostgres) -> None:
    """The hand-written receiving loop reads COPY's final result itself: a server error
    midway (here a statement timeout) surfaces as psycopg's error of that kind."""
    with pg.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS slow (id int PRIMARY KEY, pad text)")
        conn.execute("TRUNCATE slow")
        conn.execute("INSERT INTO slow SELECT g, repeat('x', 500) FROM generate_series(1, 400000) g")
        with pytest.raises(psycopg.errors.QueryCanceled), conn.transaction():
            conn.execute("SELECT set_config('statement_timeout', '30ms', true)")
            canon.table_hash(conn, "slow")
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert canon.table_hash(conn, "slow").rows == 400000
        conn.execute("DROP TABLE slow")


def test_a_missing_psql_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CanonError, match=r"^psql \(.*\) could not be started: No such file"):
        tablehash.table_hash_via_psql(tmp_path / "psql", "dbname=x", {}, "t", ("id",), ("id",))
