"""opsgate's Vercel client against the sandbox's Vercel API on 127.0.0.1: it follows the
pages of every list, retries a busy (429) or failing (5xx) API within a bounded budget,
honouring Retry-After, and says in one line what it retried and why it gave up, the
token in none of it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from opsgate.clients import vercel
from opsgate.errors import VercelApiError
from opsgate.sandbox.reference_app import Faults
from opsgate.sandbox.servers import ThreadedServer
from opsgate.sandbox.vercel_api import SandboxVercel
from tests.vercel_helpers import served_vercel_api

TOKEN = "sbx_vercel_client-token-4c2d"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[SandboxVercel, Faults, str]]:
    with served_vercel_api(TOKEN) as served:
        yield served


@pytest.fixture
def sandbox_api(served: tuple[SandboxVercel, Faults, str]
                ) -> Iterator[tuple[SandboxVercel, Faults, vercel.VercelApi]]:
    state, faults, url = served
    link = vercel.ProjectLink(state.project.id, state.team_id, "VERCEL_PROJECT_ID")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        api = vercel.VercelApi(client, link)
        api.page_limit = 2  # what the client asks; the server may cap it lower
        try:
            yield state, faults, api
        finally:
            faults.clear()
            state.page_limit = 100
            state.retry_after_s = 1


def test_env_and_deployments_are_read_across_every_page(
        sandbox_api: tuple[SandboxVercel, Faults, vercel.VercelApi]) -> None:
    state, faults, api = sandbox_api
    state.page_limit = 2  # the server's cap, whatever a client asks
    envs = api.envs()
    assert sorted(e["id"] for e in envs) == sorted(e["id"] for e in state.project.envs)
    assert api.pages == 4  # eight variables, two a page
    seen = state.view(state.project.id, faults)
    assert seen is not None
    production = [d["id"] for d in seen.deployments if d["target"] == "production"]
    api.pages = 0
    assert [d["uid"] for d in api.deployments("production")] == production
    assert api.pages == 3  # five deployments, two a page
    latest = api.latest_production_deployment()
    assert latest is not None and latest["uid"] == production[0]
    assert latest["readyState"] == "READY"


def test_a_rate_limited_api_is_retried_after_the_time_it_asks(
        sandbox_api: tuple[SandboxVercel, Faults, vercel.VercelApi],
        caplog: pytest.LogCaptureFixture) -> None:
    state, faults, api = sandbox_api
    faults.set("vercel-429")
    caplog.set_level(logging.WARNING, logger="opsgate.vercel")
    started = time.monotonic()
    assert api.project()["id"] == state.project.id
    assert time.monotonic() - started >= state.retry_after_s
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"Vercel project {state.project.id}: GET ")
    assert line.endswith("answered HTTP 429 rate_limited: Rate limit exceeded; retry 1 of 2 "
                         "in 1.0 s")
    assert TOKEN not in caplog.text


@pytest.mark.usefixtures("quick_retries")
def test_a_failing_api_is_retried_then_reported_in_one_line(
        sandbox_api: tuple[SandboxVercel, Faults, vercel.VercelApi],
        caplog: pytest.LogCaptureFixture) -> None:
    _, faults, api = sandbox_api
    faults.set("vercel-503")
    caplog.set_level(logging.WARNING, logger="opsgate.vercel")
    with pytest.raises(VercelApiError) as raised:
        api.envs()
    message = str(raised.value)
    assert "\n" not in message and TOKEN not in message
    assert message.startswith("Vercel environment variables: GET ")
    assert message.endswith("answered HTTP 503 service_unavailable: The Vercel API is "
                            "temporarily unavailable; gave up after 3 attempts")
    assert [r.getMessage().rsplit("; ", 1)[1] for r in caplog.records] == [
        "retry 1 of 2 in 0.0 s", "retry 2 of 2 in 0.0 s"]


def test_a_retry_after_beyond_the_budget_fails_at_once(
        sandbox_api: tuple[SandboxVercel, Faults, vercel.VercelApi]) -> None:
    state, faults, api = sandbox_api
    faults.set("vercel-429")
    state.retry_after_s = 3600
    started = time.monotonic()
    with pytest.raises(VercelApiError) as raised:
        api.project()
    assert time.monotonic() - started < 2
    assert str(raised.value).endswith(
        "answered HTTP 429 rate_limited: Rate limit exceeded; Retry-After 3600 s is beyond "
        "the 10 s left of the retry budget (10 s), so not retried")


def _stuck_cursor(request: Request) -> JSONResponse:
    """A list whose ``next`` never moves on: page after page of the same item."""
    return JSONResponse({"envs": [{"id": "env_1", "key": "A", "type": "plain",
                                   "value": "1", "createdAt": 5}],
                         "pagination": {"count": 1, "next": 5, "prev": None}})


def test_a_cursor_that_does_not_move_is_an_error_not_a_loop() -> None:
    server = ThreadedServer(lambda url: Starlette(routes=[
        Route("/v10/projects/{id}/env", _stuck_cursor)]), "stuck").start()
    try:
        link = vercel.ProjectLink("prj_x", None, "VERCEL_PROJECT_ID")
        with httpx.Client(base_url=server.url) as client:
            api = vercel.VercelApi(client, link)
            with pytest.raises(VercelApiError) as raised:
                api.envs()
    finally:
        server.stop()
    assert api.pages == 2
    assert str(raised.value) == ("Vercel environment variables: pagination.next 5 does not "
                                 "lead past the page before (until=5); stopped")


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    def answer(value: str) -> Any:
        return httpx.Response(429, headers={"Retry-After": value})

    assert vercel._retry_after(answer("7")) == 7.0
    later = httpx.Response(429, headers={"Retry-After": time.strftime(
        "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))})
    assert 25 < (vercel._retry_after(later) or 0) <= 30
    assert vercel._retry_after(answer("soon")) is None
    assert vercel._retry_after(httpx.Response(503)) is None


def test_since_and_prev_lead_back_to_the_newer_page(
        sandbox_api: tuple[SandboxVercel, Faults, vercel.VercelApi]) -> None:
    """The sandbox pages both ways as Vercel documents: ``prev`` of a page, passed as
    ``since``, gives the page before it."""
    state, _, api = sandbox_api
    query = {"projectId": state.project.id, "target": "production", "limit": "2"}
    first = api.get("/v7/deployments", "page 1", **query)
    second = api.get("/v7/deployments", "page 2", **query,
                     until=str(first["pagination"]["next"]))
    back = api.get("/v7/deployments", "page 1 again", **query,
                   since=str(second["pagination"]["prev"]))
    assert [d["uid"] for d in back["deployments"]] == [d["uid"] for d in first["deployments"]]
    assert back["pagination"] == first["pagination"]
    assert first["pagination"]["prev"] is None
