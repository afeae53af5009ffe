"""One place for opsgate's HTTP client settings: explicit timeouts, bounded retries.

Retries cover transport errors only (connection refused/reset, read timeouts): an HTTP
status is an answer, and retrying a 500 would hide the very fault a check exists to
report.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping
from typing import Any

import httpx

from opsgate.errors import HttpCheckError

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
RETRIES = 2
BACKOFF_S = 0.3


def client(base_url: str = "", timeout: httpx.Timeout | float | None = None,
           headers: Mapping[str, str] | None = None,
           unreachable: dict[str, str] | None = None) -> httpx.Client:
    """A client with opsgate's settings. ``unreachable``, when given, is shared by every
    client of one run: an origin that did not answer at all is recorded there with the
    line that said so, and later requests to it fail at once with that line."""
    # A query on the base URL (Vercel's x-vercel-protection-bypass, say) goes with every
    # request; left on base_url, httpx would join paths after it and lose them.
    base = httpx.URL(base_url)
    params = dict(base.params)
    cl = httpx.Client(
        base_url=base.copy_with(query=None) if params else base_url,
        params=params,
        timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
        headers=dict(headers or {}),
        follow_redirects=False,
        transport=httpx.HTTPTransport(retries=0),
    )
    if unreachable is not None:
        _RUN_MEMO[cl] = unreachable
    return cl


#: Client -> its run's record of origins that did not answer: a deployment that is
#: down is reported once, at full retry cost; the checks after it fail at once with
#: the same cause instead of waiting out the retries again.
_RUN_MEMO: weakref.WeakKeyDictionary[httpx.Client, dict[str, str]] = (
    weakref.WeakKeyDictionary())


def request(cl: httpx.Client, method: str, url: str, *, what: str, **kw: Any) -> httpx.Response:
    """Send with bounded retries on transport errors; a transport failure becomes an
    `HttpCheckError` naming ``what`` and the URL (never headers: they carry tokens)."""
    target = cl.base_url.join(url) if cl.base_url else httpx.URL(url)
    origin = f"{target.scheme}://{target.netloc.decode('ascii', 'replace')}"
    memo = _RUN_MEMO.get(cl)
    if memo is not None and origin in memo:
        raise HttpCheckError(f"{what}: {origin} did not answer earlier in this run "
                             f"({memo[origin]}); not tried again")
    for attempt in range(RETRIES + 1):
        try:
            return cl.request(method, url, **kw)
        except httpx.TimeoutException:
            kind = "timed out"
        except httpx.TransportError as exc:
            kind = f"transport error ({exc.__class__.__name__})"
        if attempt < RETRIES:
            time.sleep(BACKOFF_S * (attempt + 1))
    if memo is not None:
        memo[origin] = f"{kind} after {RETRIES + 1} attempts"
    # The transport's own exception adds nothing the line does not say: not chained.
    raise HttpCheckError(
        f"{what}: {method} {target} {kind} after {RETRIES + 1} attempts") from None


def expect_json(resp: httpx.Response, *, what: str) -> Any:
    """The JSON body of a 2xx response, or an `HttpCheckError` saying what came instead."""
    where = f"{resp.request.method} {resp.request.url.copy_with(query=None)}"
    if resp.is_redirect:
        # A login wall or a moved deployment answers 30x: say where it points, not
        # "not JSON" (redirects are never followed: they would hide that answer).
        raise HttpCheckError(f"{what}: {where} answered HTTP {resp.status_code} redirecting to "
                             f"{resp.headers.get('location', '(no Location header)')}")
    if resp.status_code >= 400:
        snippet = resp.text[:200].replace("\n", " ")
        raise HttpCheckError(f"{what}: {where} answered HTTP {resp.status_code}: {snippet!r}")
    ctype = resp.headers.get("content-type", "")
    try:
        return resp.json()
    except ValueError:
        snippet = resp.text[:120].replace("\n", " ")
        raise HttpCheckError(
            f"{what}: {where} did not return JSON (content-type {ctype or 'none'!r}, "
            f"body starts {snippet!r})"
        ) from None
