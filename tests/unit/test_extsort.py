"""External sort of records ``(key, canonical bytes)``: stable, bounded, lossless."""

from __future__ import annotations

import random
import tempfile
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opsgate.verify import canon, extsort

keys = st.one_of(st.text(max_size=4), st.tuples(st.text(max_size=3), st.text(max_size=3),
                                                 st.text(max_size=3)))


@settings(max_examples=200)
@given(st.lists(st.tuples(st.text("ab\t\n\"\\é\U0001f602", max_size=3),
                          st.text("xyz\t\n\r\x00\u2028", max_size=6)), max_size=60),
       st.integers(1, 7), st.integers(1, 200))
def test_sorted_like_sorted_stable_whatever_the_runs(
        pairs: list[tuple[str, str]], chunk: int, max_bytes: int) -> None:
    """Keys and items holding tabs, newlines, quotes, astral characters survive the
    spill files; equal keys keep their input order, as ``sorted`` keeps them."""
    records = [(k, canon.canonical_json({"v": v, "i": i})) for i, (k, v) in enumerate(pairs)]
    got = list(extsort.sort_records(iter(records), chunk_size=chunk, max_bytes=max_bytes))
    assert got == sorted(records, key=lambda r: r[0])


def test_tuple_keys_come_back_as_tuples() -> None:
    records = [(("b", "a", "r"), b"1"), (("a", "\t", "r"), b"2"), (("a", "\t", "q"), b"3")]
    got = list(extsort.sort_records(records, chunk_size=1))
    assert got == [(("a", "\t", "q"), b"3"), (("a", "\t", "r"), b"2"), (("b", "a", "r"), b"1")]
    assert list(extsort.spool_records(records)) == records


def test_blocks_and_runs_survive_many_entries(tmp_path: Any) -> None:
    """Runs span many marshal blocks; the merge of several is the stable sort."""
    rnd = random.Random(3)
    records = [((f"s{rnd.randrange(50)}", f"t{rnd.randrange(50)}", "r"), b"x%d" % i)
               for i in range(3 * extsort.BLOCK_ENTRIES + 7)]
    got = list(extsort.sort_records(records, chunk_size=extsort.BLOCK_ENTRIES + 3))
    assert got == sorted(records, key=lambda r: r[0])


def test_runs_are_cut_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    spills: list[int] = []
    real = extsort.write_sorted_run

    def counting(path: Any, entries: Any) -> Any:
        spills.append(len(entries))
        return real(path, entries)

    monkeypatch.setattr(extsort, "write_sorted_run", counting)
    rnd = random.Random(7)
    records = [(str(rnd.random()), b"x" * 100) for _ in range(50)]
    got = list(extsort.sort_records(records, chunk_size=1000, max_bytes=1000))
    assert got == sorted(records, key=lambda r: r[0])
    assert spills == [10] * 5


def test_spill_folder_is_removed_after_the_merge(tmp_path: Any, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    merged = extsort.sort_records([(str(i % 5), b"%d" % i) for i in range(20)], chunk_size=4)
    assert any(tmp_path.iterdir())
    assert len(list(merged)) == 20
    assert not any(tmp_path.iterdir())
