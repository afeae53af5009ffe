"""Locating differing rows between two independent PostgreSQL clusters."""

from __future__ import annotations

from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.verify import rowdiff


def _load(pg: EmbeddedPostgres) -> None:
    with pg.connect(autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS things")
        conn.execute("CREATE TABLE things (id int PRIMARY KEY, name text, score float8, "
                     "seen timestamptz)")
        conn.execute("INSERT INTO things SELECT g, 'n' || g, g / 3.0, "
                     "'2026-01-01'::timestamptz + g * interval '1 minute' "
                     "FROM generate_series(1, 50000) g")


def test_changed_missing_and_extra_rows_are_located(pg: EmbeddedPostgres,
                                                    pg_other: EmbeddedPostgres) -> None:
    _load(pg)
    _load(pg_other)
    with pg_other.connect(autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Asia/Tokyo'")  # other session settings, same data
        conn.execute("UPDATE things SET name = name || '!' WHERE id IN "
                     "(7, 70, 700, 7000, 17000, 27000, 37000, 47000, 49000, 49999)")
        conn.execute("DELETE FROM things WHERE id = 12345")
        conn.execute("INSERT INTO things VALUES (60001, 'new', 1, now())")
    with pg.connect(autocommit=True) as a, pg_other.connect(autocommit=True) as b:
        diff = rowdiff.locate(a, b, "things")
    assert [k[0] for k in diff.changed] == sorted(
        [7, 70, 700, 7000, 17000, 27000, 37000, 47000, 49000, 49999], key=str)
    assert diff.only_in_a == [(12345,)] and diff.only_in_b == [(60001,)]
    assert diff.buckets_differing <= 12
    assert "10 changed (id: " in diff.describe()


def test_equal_tables_have_no_differences(pg: EmbeddedPostgres,
                                          pg_other: EmbeddedPostgres) -> None:
    _load(pg)
    _load(pg_other)
    with pg.connect(autocommit=True) as a, pg_other.connect(autocommit=True) as b:
        diff = rowdiff.locate(a, b, "things")
    assert diff.total == 0 and diff.buckets_differing == 0
