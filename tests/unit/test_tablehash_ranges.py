"""The ordering of a table hash's ranges, without a server: whatever the interleaving of
the receiving threads, the digest is SHA-256 of the ranges' bytes in range order.

`tablehash._Ranges` switches a range from its spool to the hasher's queue while its
receiver may be writing; these tests drive it with many small buffers, random pauses
and random claim orders, so that every switch happens at some odd moment.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from pathlib import Path

import pytest
from psycopg import sql

from opsgate.verify import tablehash


def run(seed: int, ranges_n: int, receivers: int) -> tuple[tablehash._Ranges, list[bytes]]:
    rnd = random.Random(seed)
    data = [b"".join(b"%d-%d\t%s\n" % (i, j, b"x" * rnd.randrange(0, 300))
                     for j in range(rnd.randrange(0, 400))) for i in range(ranges_n)]
    ranges = tablehash._Ranges()
    ranges.start([sql.SQL("range {}").format(sql.Literal(i)) for i in range(ranges_n)])
    hasher = threading.Thread(target=ranges.hash_in_order)
    hasher.start()

    def receive(who: int) -> None:
        mine = random.Random(seed * 100 + who)
        while (i := ranges.claim(who)) is not None:
            blob, at = data[i], 0
            while at < len(blob):
                size = mine.choice([1, 7, 100, 4096, 20000])
                ranges.put(i, bytearray(blob[at:at + size]))
                at += size
                if mine.random() < 0.05:
                    time.sleep(mine.random() / 500)
            ranges.done(i, blob.count(b"\n"))

    threads = [threading.Thread(target=receive, args=(n,)) for n in range(receivers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hasher.join()
    ranges.raise_failure()
    return ranges, data


@pytest.mark.parametrize("seed", range(12))
def test_any_interleaving_hashes_the_ranges_in_order(
        seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    ranges, data = run(seed, ranges_n=3 + seed % 9, receivers=2 + seed % 3)
    whole = b"".join(data)
    assert ranges.result() == (hashlib.sha256(whole).hexdigest(), whole.count(b"\n"),
                               len(whole))
    assert sum(ranges.by_connection(2 + seed % 3)) == len(data)
    assert ranges.spooled <= len(whole)
    ranges.close()
    assert list(tmp_path.iterdir()) == []


def test_a_failure_stops_every_thread_and_is_raised() -> None:
    ranges = tablehash._Ranges()
    ranges.start([sql.Composed([sql.SQL("r0")]), sql.Composed([sql.SQL("r1")])])
    hasher = threading.Thread(target=ranges.hash_in_order)
    hasher.start()
    assert ranges.claim(0) == 0
    ranges.put(0, bytearray(b"a\n"))
    ranges.fail(RuntimeError("the server went away"))
    hasher.join(10)
    assert not hasher.is_alive()
    with pytest.raises(tablehash._Stopped):
        ranges.put(0, bytearray(b"b\n"))
    with pytest.raises(tablehash._Stopped):
        ranges.claim(1)
    with pytest.raises(RuntimeError, match="went away"):
        ranges.raise_failure()
    ranges.close()
