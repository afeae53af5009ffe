"""Locating differing rows between two independent PostgreSQL clusters."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.verify import rowdiff

CHANGED = [7, 70, 700, 7000, 17000, 27000, 37000, 47000, 49000, 49999]


def _load(pg: EmbeddedPostgres, key_type: str = "int") -> None:
    """50,000 rows keyed by ``key_type`` (an integer type, or text: the md5 buckets)."""
    key = "g" if key_type != "text" else "'k' || g"
    with pg.connect(autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS things")
        conn.execute(f"CREATE TABLE things (id {key_type} PRIMARY KEY, name text, "
                     "score float8, seen timestamptz)")
        conn.execute(f"INSERT INTO things SELECT {key}, 'n' || g, g / 3.0, "
                     "'2026-01-01'::timestamptz + g * interval '1 minute' "
                     "FROM generate_series(1, 50000) g")


def _doctor(pg: EmbeddedPostgres, key: Any = lambda g: g) -> None:
    with pg.connect(autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Asia/Tokyo'")  # other session settings, same data
        conn.execute("UPDATE things SET name = name || '!' WHERE id = ANY(%s)",
                     ([key(g) for g in CHANGED],))
        conn.execute("DELETE FROM things WHERE id = %s", (key(12345),))
        conn.execute("INSERT INTO things VALUES (%s, 'new', 1, now())", (key(60001),))


@pytest.mark.parametrize("key_type", ["int", "bigint"])
def test_integer_keys_are_bucketed_by_range_and_every_fault_is_located(
        pg: EmbeddedPostgres, pg_other: EmbeddedPostgres, key_type: str) -> None:
    _load(pg, key_type)
    _load(pg_other, key_type)
    _doctor(pg_other)
    with pg.connect(autocommit=True) as a, pg_other.connect(autocommit=True) as b:
        diff = rowdiff.locate(a, b, "things")
    assert diff.bucketing == "4096 ranges of id"
    assert [k[0] for k in diff.changed] == CHANGED
    assert diff.only_in_a == [(12345,)] and diff.only_in_b == [(60001,)]
    assert (diff.count_changed, diff.total) == (10, 12)
    assert diff.buckets_differing <= 12
    assert "10 changed (id: 7, 70, 700" in diff.describe()


def test_text_keys_fall_back_to_md5_buckets_and_locate_the_same_faults(
        pg: EmbeddedPostgres, pg_other: EmbeddedPostgres) -> None:
    _load(pg, "text")
    _load(pg_other, "text")
    _doctor(pg_other, key=lambda g: f"k{g}")
    with pg.connect(autocommit=True) as a, pg_other.connect(autocommit=True) as b:
        diff = rowdiff.locate(a, b, "things")
    assert diff.bucketing == "4096 buckets by md5 of the key"
    assert sorted(k[0] for k in diff.changed) == sorted(f"k{g}" for g in CHANGED)
    assert diff.only_in_a == [("k12345",)] and diff.only_in_b == [("k60001",)]


def test_keys_far_apart_use_wide_ranges(pg: EmbeddedPostgres, pg_other: EmbeddedPostgres
                                        ) -> None:
    """Keys spanning almost all of bigint: key - low would overflow bigint arithmetic."""
    for cluster in (pg, pg_other):
        with cluster.connect(autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS things")
            conn.execute("CREATE TABLE things (id bigint PRIMARY KEY, name text)")
            conn.execute("INSERT INTO things VALUES (-9223372036854775808, 'low'), "
                         "(0, 'zero'), (9223372036854775807, 'high')")
    with pg_other.connect(autocommit=True) as conn:
        conn.execute("UPDATE things SET name = 'HIGH' WHERE id = 9223372036854775807")
    with pg.connect(autocommit=True) as a, pg_other.connect(autocommit=True) as b:
        diff = rowdiff.locate(a, b, "things")
    assert diff.changed == [(9223372036854775807,)] and diff.total == 1


def test_many_differences_keep_bounded_examples_and_exact_counts(
        pg: EmbeddedPostgres, pg_other: EmbeddedPostgres,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bucket differs: the rows are read back in a few key ranges (one query per
    bucket was 4,096 queries, each two server-side cursors), counted exactly."""
    _load(pg)
    _load(pg_other)
    with pg_other.connect(autocommit=True) as conn:
        conn.execute("UPDATE things SET name = name || '!' WHERE id % 7 = 0")  # 7,142 rows
        conn.execute("DELETE FROM things WHERE id % 7 = 1")  # 7,143 rows
    reads: list[tuple[Any, ...]] = []
    compare = rowdiff._compare

    def counted(*args: Any) -> None:
        reads.append(args[-2])
        compare(*args)

    monkeypatch.setattr(rowdiff, "_compare", counted)
    with pg.connect(autocommit=True) as a, pg_other.connect(autocommit=True) as b:
        diff = rowdiff.locate(a, b, "things")
    assert diff.buckets_differing >= diff.buckets_compared - 1 > 3800
    assert len(reads) <= rowdiff.BUCKETS // rowdiff.SPAN_BUCKETS, len(reads)
    assert (diff.count_changed, diff.count_only_in_a, diff.count_only_in_b) == (7142, 7143, 0)
    assert len(diff.changed) == len(diff.only_in_a) == rowdiff.EXAMPLES
    assert all(k[0] % 7 == 0 for k in diff.changed)
    assert diff.describe().startswith("7142 changed (id: ")
    assert diff.describe().count(",") < 40  # ten examples of each kind, not thousands


def test_equal_tables_have_no_differences(pg: EmbeddedPostgres,
                                          pg_other: EmbeddedPostgres) -> None:
    _load(pg)
    _load(pg_other)
    with pg.connect(autocommit=True) as a, pg_other.connect(autocommit=True) as b:
        diff = rowdiff.locate(a, b, "things")
    assert diff.total == 0 and diff.buckets_differing == 0 and diff.buckets_compared > 0


@pytest.mark.parametrize("when", ["while it runs", "just before it starts"])
def test_a_stop_on_one_side_cancels_the_other_sides_scan(
        pg: EmbeddedPostgres, pg_other: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch,
        when: str) -> None:
    """A stop (KeyboardInterrupt) in this thread's scan cancels the other server's scan
    instead of waiting it out: it would hold a stopped run past CI's SIGKILL. A cancel
    that lands before the other side's statement has started cancels nothing, so the
    stop goes on cancelling until that side has ended."""
    ready = threading.Event()
    first_cancel = threading.Event()
    cancel = rowdiff._cancel

    def cancel_and_say(conn: psycopg.Connection[Any], timeout: float) -> None:
        cancel(conn, timeout)
        first_cancel.set()

    monkeypatch.setattr(rowdiff, "_cancel", cancel_and_say)

    def scan(conn: psycopg.Connection[Any]) -> None:
        if conn is a:
            assert ready.wait(30)
            if when == "while it runs":
                with pg_other.connect(autocommit=True) as watch:
                    while watch.execute("SELECT state FROM pg_stat_activity WHERE pid = %s",
                                        (pid,)).fetchone() != ("active",):
                        time.sleep(0.01)
            raise KeyboardInterrupt
        ready.set()
        if when == "just before it starts":  # the stop's first cancel while nothing runs
            assert first_cancel.wait(30)
        conn.execute("SELECT pg_sleep(60)")

    with pg.connect(autocommit=True) as a, pg_other.connect(autocommit=True) as b:
        pid = b.info.backend_pid
        t = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            rowdiff._both(scan, a, b)
        stopped = time.monotonic() - t
        with pg_other.connect(autocommit=True) as watch:
            state = watch.execute("SELECT state FROM pg_stat_activity WHERE pid = %s",
                                  (pid,)).fetchone()
    assert state == ("idle",), f"the other side's scan is {state} after the stop"
    assert stopped < 10, f"the stop waited {stopped:.1f} s for the other side"


def test_an_error_on_the_other_side_cancels_this_sides_scan(
        pg: EmbeddedPostgres, pg_other: EmbeddedPostgres) -> None:
    """The other server's side fails at once: this side's scan is cancelled, not waited
    out, and the error reported is the one that failed first, not the cancel."""
    def scan(conn: psycopg.Connection[Any]) -> None:
        if conn is b:
            conn.execute("SELECT 1 / 0")
        conn.execute("SELECT pg_sleep(60)")

    with pg.connect(autocommit=True) as a, pg_other.connect(autocommit=True) as b:
        t = time.monotonic()
        with pytest.raises(psycopg.errors.DivisionByZero):
            rowdiff._both(scan, a, b)
        waited = time.monotonic() - t
    assert waited < 10, f"this side's scan was waited out ({waited:.1f} s)"


def test_a_stop_outranks_the_errors_it_caused() -> None:
    cancelled = psycopg.errors.QueryCanceled("canceling statement due to user request")
    stop = KeyboardInterrupt()
    assert rowdiff._first([cancelled, stop]) is stop
    assert rowdiff._first([cancelled]) is cancelled
