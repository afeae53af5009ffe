"""`StreamDigest` hashes on a thread of its own; a block that fails or is stopped must
end without waiting on that thread forever. A stopped drill hung in its ``__exit__``
(SIGINT during the source's hash: the main thread joined a digest thread that never woke,
60 s until the test killed it)."""

from __future__ import annotations

import hashlib
import queue
import threading
import time

import pytest

from opsgate.verify import tablehash
from opsgate.verify.tablehash import StreamDigest


def test_the_digest_is_sha256_of_every_piece() -> None:
    pieces = [bytearray(b"x" * n) for n in (1, 2 << 20, 0, 7)]
    with StreamDigest() as digest:
        for piece in pieces:
            digest.put(bytearray(piece))
        got = digest.hexdigest()
    assert got == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert digest.bytes == sum(map(len, pieces))


def test_a_stopped_block_ends_even_when_the_thread_missed_its_wake_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The bound itself, not its length, is what this proves: the product's 5 s is
    # shortened here so the test does not wait it out.
    monkeypatch.setattr(tablehash, "_ABANDON_WAIT_S", 0.1)
    digest = StreamDigest()
    # The thread is waiting on its queue; a queue it will never look at stands for the
    # wake-up lost inside queue's own locking when a stop interrupts a blocked put.
    # The thread waits in get() (Condition keeps its waiters in _waiters).
    while not digest._queue.not_empty._waiters:  # type: ignore[attr-defined]
        time.sleep(0.001)
    digest._queue = queue.Queue(maxsize=1)
    ended = threading.Event()

    def stopped_block() -> None:
        with pytest.raises(KeyboardInterrupt), digest:
            raise KeyboardInterrupt
        ended.set()

    threading.Thread(target=stopped_block, daemon=True).start()
    assert ended.wait(10), "the stopped block waited on its digest thread"
    assert digest._thread.is_alive()  # it ended on the bound, not on the thread's end


def test_a_stopped_block_with_a_full_queue_stops_the_thread() -> None:
    digest = StreamDigest()
    release = threading.Event()
    slow = hashlib.sha256()

    class Slow:
        """A digest whose update waits, so the queue fills up behind it."""

        def update(self, buf: bytes) -> None:
            release.wait(10)
            slow.update(buf)

        def hexdigest(self) -> str:
            return slow.hexdigest()

    digest._digest = Slow()  # type: ignore[assignment]
    for _ in range(8):  # one being hashed, the queue full behind it
        if digest._queue.full():
            break
        digest.put(bytearray(b"y"))
    with pytest.raises(KeyboardInterrupt), digest:
        release.set()
        raise KeyboardInterrupt
    assert not digest._thread.is_alive()
