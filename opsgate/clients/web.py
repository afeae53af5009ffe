"""One place for opsgate's HTTP client settings: explicit timeouts, bounded retries.

Retries cover transport errors only (connection refused/reset, read timeouts): an HTTP
status is an answer, and retrying a 500 would hide the very fault a check exists to
report.
"""

from __future__ import annotations

import functools
import os
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, BinaryIO

import httpx

from opsgate.config import DEFAULT_HTTP_TIMEOUT
from opsgate.errors import HttpCheckError, HttpNotTriedAgain

#: For a client made without a time-out: the one default of OPSGATE_HTTP_TIMEOUT.
DEFAULT_TIMEOUT = httpx.Timeout(DEFAULT_HTTP_TIMEOUT)
RETRIES = 2
BACKOFF_S = 0.3


def client(base_url: str = "", timeout: httpx.Timeout | float | None = None,
           headers: Mapping[str, str] | None = None,
           unreachable: dict[str, str] | None = None) -> httpx.Client:
    """A client with opsgate's settings. ``unreachable``, when given, is shared by every
    client of one run: an origin that could not be connected to (refused, or no
    connection within the connect time-out) is recorded there with the line that said
    so, and later requests to it fail at once, an `HttpNotTriedAgain` carrying that
    line (`RunTransport`)."""
    # A query on the base URL (Vercel's x-vercel-protection-bypass, say) goes with every
    # request; left on base_url, httpx would join paths after it and lose them.
    base = httpx.URL(base_url)
    params = dict(base.params)
    return Client(
        RunTransport(unreachable, retries=0, verify=_tls_context(
            os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))),
        base_url=base.copy_with(query=None) if params else base_url,
        params=params,
        timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
        headers=dict(headers or {}),
        follow_redirects=False,
    )


class NotTriedAgain(httpx.TransportError):
    """A request to an origin this run could not connect to earlier: refused at once,
    so a deployment that is down is reported once, at full retry cost, and the checks
    after it fail with the same cause instead of waiting out the retries again."""


class RunTransport(httpx.HTTPTransport):
    """httpx's transport, with the run's memory of origins that could not be connected
    to. A slow answer is not in it: an origin that answered once can be slow on one
    path (a large export) and quick on the others."""

    def __init__(self, unreachable: dict[str, str] | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.unreachable = unreachable

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.unreachable is not None:
            seen = self.unreachable.get(_origin(request.url))
            if seen is not None:
                raise NotTriedAgain(seen, request=request)
        return super().handle_request(request)

    def remember(self, url: httpx.URL, line: str) -> None:
        if self.unreachable is not None:
            self.unreachable[_origin(url)] = line


class Client(httpx.Client):
    """An httpx client that keeps its `RunTransport` at hand, for the retry loop to
    record an origin it could not connect to."""

    def __init__(self, run_transport: RunTransport, **kw: Any) -> None:
        super().__init__(transport=run_transport, **kw)
        self.run_transport = run_transport


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """httpx's own default TLS context (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), built
    once per process and trust setting. httpx builds a new one for every client, loading
    the whole CA bundle each time (about 35 ms of CPU), and a gate run makes a client per
    check; one context serves any number of connections. The two variables are the key
    because httpx reads them when it builds the context."""
    del cert_file, cert_dir  # the cache key only: create_ssl_context reads them itself
    return httpx.create_ssl_context()


def request(cl: httpx.Client, method: str, url: str, *, what: str, **kw: Any) -> httpx.Response:
    """Send with bounded retries on transport errors; a transport failure becomes an
    `HttpCheckError` naming ``what`` and the URL (never headers: they carry tokens)."""
    return _with_retries(cl, method, url, what, lambda: cl.request(method, url, **kw))


def download(cl: httpx.Client, url: str, dest: BinaryIO, *, what: str,
             on_chunk: Callable[[int], None] | None = None) -> httpx.Response:
    """GET ``url`` streamed into ``dest``: the body never sits whole in memory. Retries
    like `request` (``dest`` starts over on each attempt); a redirect or an HTTP error
    is an `HttpCheckError` saying what answered. Returns the response, body consumed."""

    def attempt() -> httpx.Response:
        dest.seek(0)
        dest.truncate()
        with cl.stream("GET", url) as resp:
            if resp.is_redirect or resp.status_code >= 400:
                resp.read()
                _raise_for_answer(resp, what)
            for chunk in resp.iter_bytes(CHUNK_BYTES):
                dest.write(chunk)
                if on_chunk is not None:
                    on_chunk(len(chunk))
        return resp

    return _with_retries(cl, "GET", url, what, attempt)


@contextmanager
def streamed(cl: httpx.Client, url: str, *, what: str,
             check: Callable[[httpx.Response], None] | None = None) -> Iterator[BodyReader]:
    """GET ``url`` and read its body as a file (``read(n)``) while it arrives: for a
    streaming parser (ijson), so a large body never sits whole in memory. Connecting is
    retried like `request`; ``check`` sees the answer first (to raise its own error);
    a redirect or HTTP error is an `HttpCheckError`."""

    def send() -> httpx.Response:
        return cl.send(cl.build_request("GET", url), stream=True)

    resp = _with_retries(cl, "GET", url, what, send)
    try:
        if resp.is_redirect or resp.status_code >= 400:
            resp.read()
            if check is not None:
                check(resp)
            _raise_for_answer(resp, what)
        yield BodyReader(resp, what)
    finally:
        resp.close()


class BodyReader:
    """A streamed response body as a binary file for parsers; a transport failure
    midway is an `HttpCheckError` naming ``what``."""

    def __init__(self, resp: httpx.Response, what: str) -> None:
        self._chunks = resp.iter_bytes(CHUNK_BYTES)
        self._where = where(resp)
        self._what = what

    def read(self, n: int = -1) -> bytes:
        """The next piece of the body, whatever its size (b"" at the end); ``read(0)``,
        with which ijson probes for bytes or text, reads nothing."""
        if n == 0:
            return b""
        try:
            return next(self._chunks, b"")
        except httpx.TimeoutException:
            kind = "timed out"
        except httpx.TransportError as exc:
            kind = f"transport error ({exc.__class__.__name__})"
        raise HttpCheckError(f"{self._what}: {self._where} {kind} while the body was read")


#: Read size of a streamed download: large enough that per-chunk costs vanish.
CHUNK_BYTES = 1 << 20


def _with_retries(cl: httpx.Client, method: str, url: str, what: str,
                  send: Callable[[], httpx.Response]) -> httpx.Response:
    target = cl.base_url.join(url) if cl.base_url else httpx.URL(url)
    for attempt in range(RETRIES + 1):
        try:
            return send()
        except NotTriedAgain as exc:
            raise HttpNotTriedAgain(f"{what}: {_origin(target)} did not answer earlier in "
                                    f"this run ({exc}); not tried again", str(exc)) from None
        except httpx.TimeoutException as exc:
            kind = _timed_out(exc, cl.timeout)
            connected = not isinstance(exc, httpx.ConnectTimeout)
        except httpx.TransportError as exc:
            kind = f"transport error ({exc.__class__.__name__})"
            connected = not isinstance(exc, httpx.ConnectError)
        if attempt < RETRIES:
            time.sleep(BACKOFF_S * (attempt + 1))
    line = f"{what}: {method} {target} {kind} after {RETRIES + 1} attempts"
    if not connected and isinstance(cl, Client):
        cl.run_transport.remember(target, line)
    # The transport's own exception adds nothing the line does not say: not chained.
    raise HttpCheckError(line) from None


def _timed_out(exc: httpx.TimeoutException, timeout: httpx.Timeout) -> str:
    """Which wait ran out and how long it was: a read time-out is the time between two
    bytes of the answer, not the time for the whole answer."""
    for kind, limit, phrase in ((httpx.ConnectTimeout, timeout.connect, "no connection"),
                                (httpx.ReadTimeout, timeout.read, "no byte of the answer"),
                                (httpx.WriteTimeout, timeout.write, "could not send"),
                                (httpx.PoolTimeout, timeout.pool, "no free connection")):
        if isinstance(exc, kind):
            return f"timed out ({phrase} for {limit:g} s)" if limit else "timed out"
    return "timed out"


def where(resp: httpx.Response) -> str:
    """'GET https://host/path' of a response, without its query (it may carry a token)."""
    return f"{resp.request.method} {resp.request.url.copy_with(query=None)}"


def _raise_for_answer(resp: httpx.Response, what: str) -> None:
    """An `HttpCheckError` for a redirect or an HTTP error status; nothing otherwise."""
    if resp.is_redirect:
        # A login wall or a moved deployment answers 30x: say where it points, not
        # "not JSON" (redirects are never followed: they would hide that answer).
        raise HttpCheckError(f"{what}: {where(resp)} answered HTTP {resp.status_code} "
                             "redirecting to "
                             f"{resp.headers.get('location', '(no Location header)')}")
    if resp.status_code >= 400:
        snippet = resp.text[:200].replace("\n", " ")
        raise HttpCheckError(f"{what}: {where(resp)} answered HTTP {resp.status_code}: "
                             f"{snippet!r}")


def not_json(resp: httpx.Response, what: str, start: bytes | str) -> HttpCheckError:
    """The error for a 2xx answer whose body is not JSON (``start``: its first bytes)."""
    ctype = resp.headers.get("content-type", "")
    text = start if isinstance(start, str) else start.decode("utf-8", "replace")
    snippet = text[:120].replace("\n", " ")
    return HttpCheckError(
        f"{what}: {where(resp)} did not return JSON (content-type {ctype or 'none'!r}, "
        f"body starts {snippet!r})")


def expect_json(resp: httpx.Response, *, what: str) -> Any:
    """The JSON body of a 2xx response, or an `HttpCheckError` saying what came instead."""
    _raise_for_answer(resp, what)
    try:
        return resp.json()
    except ValueError:
        raise not_json(resp, what, resp.text) from None
