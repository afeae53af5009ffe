"""The sandbox's Vercel REST API served on 127.0.0.1, for the tests that speak to it
directly (opsgate's client, the official SDK, the token canaries)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opsgate.sandbox.reference_app import Faults
from opsgate.sandbox.servers import ThreadedServer
from opsgate.sandbox.vercel_api import SandboxVercel, create_vercel_app
from opsgate.sensitive import Secret


@contextmanager
def served_vercel_api(token: str, state: SandboxVercel | None = None
                      ) -> Iterator[tuple[SandboxVercel, Faults, str]]:
    """(its state, its fault switches, its URL) while it runs; ``state`` to serve one the
    test prepared."""
    faults = Faults()
    state = state or SandboxVercel(Secret(token), "127.0.0.1:9")
    server = ThreadedServer(lambda url: create_vercel_app(state, faults), "vercel").start()
    try:
        yield state, faults, server.url
    finally:
        server.stop()
