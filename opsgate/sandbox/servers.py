"""Serving ASGI apps on 127.0.0.1 from a background thread (uvicorn), for the sandbox."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from opsgate.errors import OpsgateError


def _listening(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1: on ``port`` if it is free, else on a free one."""
    for wanted in (port, 0) if port else (0,):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it (Linux): without it, every request after the
        # first on a kept-alive connection waited ~40 ms for the client's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind(("127.0.0.1", wanted))
            sock.listen(128)  # here, so that a port in use fails now, not in uvicorn
        except OSError:
            sock.close()
            if not wanted:
                raise
            continue
        return sock
    raise AssertionError("unreachable")


class ThreadedServer:
    """uvicorn on 127.0.0.1 on a free port, started and stopped from the owning thread."""

    def __init__(self, app_factory: Callable[[str], Any], name: str, port: int = 0) -> None:
        """``app_factory`` receives the server's own base URL (known before it starts).
        ``port``: the one to listen on when it is free, else any free one (`port` says
        which it got)."""
        self.name = name
        self._sock = _listening(port)
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(app_factory(self.url), log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"opsgate-{name}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OpsgateError(f"the sandbox {self.name} server did not start")
            time.sleep(0.002)  # uvicorn is up in ~2 ms: 20 ms steps cost each start ~20 ms
        return self

    def signal_stop(self) -> None:
        """Ask the server to stop without waiting (uvicorn looks every 0.1 s): stopping
        several servers costs one wait, not one each."""
        self._server.should_exit = True

    def stop(self) -> None:
        self.signal_stop()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._sock.close()
