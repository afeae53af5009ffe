"""The sandbox's HTTP servers answer every request on a kept-alive connection at once:
without TCP_NODELAY, each one after the first waited ~40 ms for the client's delayed
ACK (a blob refresh makes five requests, a gate run hundreds)."""

from __future__ import annotations

import statistics
import time

import httpx

from opsgate.sandbox.blob_server import BlobBucket, create_blob_app
from opsgate.sandbox.servers import ThreadedServer
from opsgate.sensitive import Secret


def test_requests_on_a_kept_alive_connection_are_not_held_back() -> None:
    bucket = BlobBucket()
    bucket.put("admin/x.json", b"{}")
    server = ThreadedServer(lambda url: create_blob_app(Secret("t"), bucket, url),
                            "blob").start()
    try:
        with httpx.Client(base_url=server.url, headers={"authorization": "Bearer t"},
                          timeout=30) as client:
            client.get("/", params={"prefix": "admin/"}).raise_for_status()  # connects
            took = []
            for _ in range(9):
                t0 = time.perf_counter()
                client.get("/", params={"prefix": "admin/"}).raise_for_status()
                took.append(time.perf_counter() - t0)
    finally:
        server.stop()
    # 44 ms each before; a few ms now, even on a loaded machine.
    assert statistics.median(took) < 0.025, [round(t, 4) for t in took]


def test_a_server_start_waits_for_uvicorn_not_for_a_poll_step() -> None:
    """uvicorn is listening in about 2 ms; looked at every 20 ms, each of a sandbox's
    three servers took 20 ms to start."""
    took = []
    for _ in range(7):
        t0 = time.perf_counter()
        server = ThreadedServer(lambda url: create_blob_app(Secret("t"), BlobBucket(), url),
                                "blob").start()
        took.append(time.perf_counter() - t0)
        server.stop()
    assert statistics.median(took) < 0.012, [round(t, 4) for t in took]
