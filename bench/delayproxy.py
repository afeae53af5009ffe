"""A delaying TCP proxy that counts what a client waits for, for `bench.roundtrips`.

Every byte between the gate and the target crosses one of these proxies, which holds
each chunk for half the added round-trip delay in each direction (so a request and its
answer cost ``delay_s`` more than without it) and keeps every direction in order. It
listens on 127.0.0.1 only, on a port the kernel picks, keeps at most ``max_connections``
open and ``queue_chunks`` chunks in flight per direction (a reader waits when the far
side is slower), and stops by itself after ``lifetime_s`` should its owner forget to.

What it counts, per endpoint:

* connections opened;
* bytes up (client to server) and down (server to client);
* round trips waited out: on each connection, the number of times the server starts
  sending after the client has sent something since the server last sent. A request
  followed by its answer is one; a query pipelined behind another without waiting for
  the first answer adds none; a TLS handshake, a SCRAM exchange or a query each add
  theirs. Every one of them costs the client one network round trip, whatever the
  bytes, which is why this, not the byte count, is what distance multiplies.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

_READ = 65536
_UP, _DOWN = "up", "down"
_T = TypeVar("_T")


@dataclass
class Counts:
    """Totals of one endpoint; `snapshot` and `minus` give a window's share."""

    round_trips: int = 0
    connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

    def minus(self, other: Counts) -> Counts:
        return Counts(self.round_trips - other.round_trips,
                      self.connections - other.connections,
                      self.bytes_up - other.bytes_up, self.bytes_down - other.bytes_down)

    def plus(self, other: Counts) -> Counts:
        return Counts(self.round_trips + other.round_trips,
                      self.connections + other.connections,
                      self.bytes_up + other.bytes_up, self.bytes_down + other.bytes_down)


@dataclass
class _Conn:
    last: str | None = None
    counts: Counts = field(default_factory=Counts)


@dataclass
class DelayProxy:
    """One listening port forwarding to ``upstream`` (host, port)."""

    name: str
    upstream: tuple[str, int]
    delay_s: float
    counts: Counts = field(default_factory=Counts)
    max_connections: int = 256
    queue_chunks: int = 64
    port: int = 0
    _open: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    #: Every connection once closed: (opened, closed) on the loop's clock, and its counts.
    closed: list[tuple[float, float, Counts]] = field(default_factory=list)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and cut every connection still open, so each pump ends."""
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
                      ) -> None:
        if self._open >= self.max_connections:
            cwriter.close()
            return
        self._open += 1
        try:
            try:
                sreader, swriter = await asyncio.open_connection(*self.upstream)
            except OSError:
                cwriter.close()
                return
            self.counts.connections += 1
            self._writers.update((cwriter, swriter))
            conn = _Conn(counts=Counts(connections=1))
            opened = asyncio.get_running_loop().time()
            await asyncio.gather(self._pump(creader, swriter, _UP, conn),
                                 self._pump(sreader, cwriter, _DOWN, conn),
                                 return_exceptions=True)
            for w in (cwriter, swriter):
                w.close()
                self._writers.discard(w)
            self.closed.append((opened, asyncio.get_running_loop().time(), conn.counts))
        finally:
            self._open -= 1

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: str, conn: _Conn) -> None:
        """Read as it comes, deliver each chunk ``delay_s / 2`` later, in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(self.queue_chunks)

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(_READ):
                for counts in (self.counts, conn.counts):
                    if direction == _UP:
                        counts.bytes_up += len(data)
                    else:
                        counts.bytes_down += len(data)
                        if conn.last == _UP:
                            counts.round_trips += 1
                conn.last = direction
                await queue.put((loop.time() + self.delay_s / 2, data))
        except OSError:
            pass
        finally:
            try:
                queue.put_nowait(None)
            except asyncio.QueueFull:
                sender.cancel()
            with contextlib.suppress(OSError, ConnectionError, asyncio.CancelledError):
                await sender


class ProxySet:
    """Proxies for several endpoints on one event loop in a thread of its own.

    ``with ProxySet({"pooled": ("127.0.0.1", 6432)}, delay_s=0.05) as proxies:`` then
    ``proxies.port("pooled")``; ``proxies.snapshot()`` copies every endpoint's counts.
    """

    def __init__(self, upstreams: dict[str, tuple[str, int]], delay_s: float,
                 lifetime_s: float = 3600.0) -> None:
        self.proxies = {name: DelayProxy(name, up, delay_s) for name, up in upstreams.items()}
        self.lifetime_s = lifetime_s
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="delay-proxies", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        for proxy in self.proxies.values():
            await proxy.start()
        self._ready.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.lifetime_s)
        for proxy in self.proxies.values():
            await proxy.close()
        # What is left once every connection is cut: cancelled, without a report each.
        self._loop.set_exception_handler(lambda loop, context: None)
        while tasks := [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def port(self, name: str) -> int:
        return self.proxies[name].port

    def connections_closed(self) -> dict[str, list[tuple[float, float, Counts]]]:
        """Every endpoint's closed connections so far (see `DelayProxy.closed`)."""
        def copy() -> dict[str, list[tuple[float, float, Counts]]]:
            return {n: list(p.closed) for n, p in self.proxies.items()}

        return asyncio.run_coroutine_threadsafe(_call(copy), self._loop).result(10)

    def settle(self, timeout_s: float = 5.0) -> None:
        """Wait until every proxied connection has closed (a client that has exited may
        not have been seen to close yet), at most ``timeout_s``."""
        import time

        end = time.monotonic() + timeout_s
        while any(p._open for p in self.proxies.values()) and time.monotonic() < end:
            time.sleep(0.02)

    def snapshot(self) -> dict[str, Counts]:
        def copy() -> dict[str, Counts]:
            return {n: Counts(**vars(p.counts)) for n, p in self.proxies.items()}

        return asyncio.run_coroutine_threadsafe(_call(copy), self._loop).result(10)

    def __enter__(self) -> ProxySet:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the delaying proxies did not start within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


async def _call(fn: Callable[[], _T]) -> _T:
    return fn()
