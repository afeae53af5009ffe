"""The subset of the Vercel REST API the deployment check reads, served by the sandbox:
a team with two projects (the app, and a staging copy whose production domain is
another), their environment variables and deployments.

The routes are the ones Vercel's official SDK (``@vercel/sdk``) calls, and every answer
carries the fields its schemas require, so the SDK parses them without complaint (a
self-test runs the SDK against this server): ``GET /v9/projects/{idOrName}``,
``GET /v10/projects/{idOrName}/env`` (``type`` plain/encrypted/sensitive, ``target``
list, ``gitBranch`` only on a branch's value; encrypted values come back encrypted unless
read one by one through ``GET /v1/projects/{idOrName}/env/{id}``; sensitive ones never
come back), ``GET /v7/deployments?projectId&target`` (newest first; ``/v6`` answers the
same), ``GET /v13/deployments/{idOrUrl}`` (an id, a deployment URL or an alias it
holds); and the writes of a rollback (`opsgate.sandbox.vercel_deploys`):
``PATCH /v9/projects/{idOrName}/env/{id}`` and ``POST /v13/deployments`` with
``deploymentId`` (a redeploy); ``teamId`` on every request; Bearer auth; errors as
``{"error": {"code", "message"}}``.

Lists are paged as Vercel pages them: newest first by ``createdAt``, ``limit`` items a
page (capped at `SandboxVercel.page_limit`), ``until``/``since`` timestamps select what
is older/newer, and ``pagination: {count, next, prev}`` gives the timestamps to pass on.

The sandbox's fault switches (`opsgate.sandbox.reference_app.Faults`) bend the answers
one precise way each, so the self-tests can prove the check goes red for that fault.
"""

from __future__ import annotations

import copy
import hmac
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opsgate.sandbox.reference_app import Faults
from opsgate.sandbox.vercel_deploys import DeploySim
from opsgate.sandbox.vercel_records import (
    SandboxProject,
    ciphertext,
    listed,
    make_deployment,
    make_project,
    new_id,
)
from opsgate.sensitive import Secret

#: The faults this API understands (part of `reference_app.FAULTS`).
VERCEL_FAULTS = ("vercel-wrong-project", "vercel-backend-blob", "vercel-backend-sensitive",
                 "vercel-preview-backend-blob", "vercel-no-database-url",
                 "vercel-deploy-error", "vercel-deploy-building", "vercel-429", "vercel-503")


#: The clock of ``vercel-429``'s window (a self-test sets readings of its own).
_clock = time.monotonic


class SandboxVercel:
    """The team, its two projects, and how faults bend them."""

    def __init__(self, token: Secret, base_host: str) -> None:
        self.token = token
        self.team_id = new_id("team_")
        self.project = make_project("constellation", self.team_id, base_host)
        self.staging = make_project("constellation-staging", self.team_id,
                                    "staging.constellation.example")
        # Made once, so that a listed id is found again by the next request.
        self.failed = make_deployment(self.project, "ERROR", [], age_s=60,
                                  errorCode="BUILD_FAILED",
                                  errorMessage='Command "next build" exited with 1')
        self.building = make_deployment(self.project, "BUILDING", [], age_s=30)
        #: The most items one page holds, whatever ``limit`` asks (Vercel caps it too);
        #: a self-test lowers it to make every list span pages.
        self.page_limit = 100
        #: What ``vercel-429`` says in ``Retry-After`` (seconds).
        self.retry_after_s = 1
        #: The `Faults.switched` whose ``vercel-429`` window has begun, and when it ends
        #: (`time.monotonic`).
        self._limited_for = -1
        self._limited_until = 0.0
        #: Redeploys, env snapshots, the request log.
        self.deploys = DeploySim(self.project)

    def env_values(self) -> dict[str, str]:
        """The sandbox's VERCEL_* variables (the token revealed, for its env file)."""
        return {"VERCEL_TOKEN": self.token.reveal(), "VERCEL_PROJECT_ID": self.project.id,
                "VERCEL_ORG_ID": self.team_id}

    def overloaded(self, faults: Faults) -> Response | None:
        """The answer of an API under load, when a fault says so: ``vercel-503`` refuses
        every request; ``vercel-429`` the first request after it is switched on, asking
        to retry after `retry_after_s`, and every request until that time has passed
        (each told the whole seconds left); then it answers. A client that honours
        ``Retry-After`` gets through on its second try; one that retries sooner is
        refused again."""
        if "vercel-503" in faults.active:
            return _error(503, "service_unavailable",
                          "The Vercel API is temporarily unavailable")
        if "vercel-429" in faults.active:
            now = _clock()
            if self._limited_for != faults.switched:
                self._limited_for = faults.switched
                self._limited_until = now + self.retry_after_s
            # To the millisecond before rounding up: the difference of two clock readings
            # carries float error, and one in twenty-five first requests was told 3601 s
            # for a window of 3600.
            left = math.ceil(round(self._limited_until - now, 3))
            if left > 0:
                reset = int(time.time()) + left
                headers = {"Retry-After": str(left),
                           "X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0",
                           "X-RateLimit-Reset": str(reset)}
                return _error(429, "rate_limited", "Rate limit exceeded", headers=headers,
                              limit={"remaining": 0, "reset": reset, "total": 100})
        return None

    def view(self, id_or_name: str, faults: Faults) -> SandboxProject | None:
        """The project as this request sees it, faults applied (on a copy)."""
        found = next((p for p in (self.project, self.staging)
                      if id_or_name in (p.id, p.name)), None)
        if found is None:
            return None
        if found is self.project and "vercel-wrong-project" in faults.active:
            found = self.staging  # as if the link named another project
        p = copy.deepcopy(found)
        if found is not self.project:
            return p
        for e in p.envs:
            if e["key"] != "ADMIN_STORAGE_BACKEND" or e.get("gitBranch"):
                continue
            if "production" in e["target"] and "vercel-backend-blob" in faults.active:
                e["value"] = "blob"
            if "production" in e["target"] and "vercel-backend-sensitive" in faults.active:
                e["type"] = "sensitive"
            if "preview" in e["target"] and "vercel-preview-backend-blob" in faults.active:
                e["value"] = "blob"  # encrypted: the check may compare it, never show it
        if "vercel-no-database-url" in faults.active:
            for e in p.envs:
                if e["key"] == "DATABASE_URL":
                    e["target"] = [t for t in e["target"] if t != "production"]
        if "vercel-deploy-error" in faults.active:
            p.deployments.append(copy.deepcopy(self.failed))
        if "vercel-deploy-building" in faults.active:
            p.deployments.append(copy.deepcopy(self.building))
        p.deployments.sort(key=lambda d: -d["createdAt"])
        return p


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
           **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}},
                        status_code=status, headers=headers)


async def _body(request: Request) -> dict[str, Any] | None:
    try:
        found = json.loads(await request.body())
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _page(request: Request, items: list[dict[str, Any]], cap: int
          ) -> tuple[list[dict[str, Any]], dict[str, int | None]] | Response:
    """One page of ``items`` (newest first by ``createdAt``) as Vercel pages: ``until``
    keeps what is older, ``since`` what is newer (the page nearest to it), ``limit``
    (at most ``cap``) how many; ``next``/``prev`` are the timestamps of the page's last
    and first item when older/newer items remain, else null."""
    try:
        limit = min(int(request.query_params.get("limit", "20")), cap)
        until = request.query_params.get("until")
        since = request.query_params.get("since")
        older = None if until is None else int(until)
        newer = None if since is None else int(since)
    except ValueError:
        return _error(400, "bad_request", "Invalid request: limit, since and until must "
                      "be integers")
    if limit < 1:
        return _error(400, "bad_request", "Invalid request: `limit` should be >= 1")
    ordered = sorted(items, key=lambda i: -int(i["createdAt"]))
    start, stop = 0, len(ordered)
    if older is not None:
        start = next((n for n, i in enumerate(ordered) if i["createdAt"] < older), stop)
    if newer is not None:
        stop = next((n for n, i in enumerate(ordered) if i["createdAt"] <= newer), stop)
        start = max(start, stop - limit)
    shown = ordered[start:min(stop, start + limit)]
    end = start + len(shown)
    return shown, {
        "count": len(shown),
        "next": shown[-1]["createdAt"] if shown and end < len(ordered) else None,
        "prev": shown[0]["createdAt"] if shown and start > 0 else None,
    }


@dataclass
class _VercelApi:
    """What the read routes share: the team and its projects, and the fault switches."""

    state: SandboxVercel
    faults: Faults

    def guard(self, request: Request) -> Response | None:
        """Every request: logged, the simulated deployments moved on, then refused when
        a fault overloads the API or the Bearer token is not the sandbox's."""
        state = self.state
        state.deploys.requests.append((request.method, request.url.path))
        state.deploys.advance()
        busy = state.overloaded(self.faults)
        if busy is not None:
            return busy
        given = request.headers.get("authorization", "")
        expected = f"Bearer {state.token.reveal()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _error(403, "forbidden", "Not authorized", invalidToken=True)
        return None

    def scoped(self, request: Request, id_or_name: str) -> SandboxProject | Response:
        bad = self.guard(request)
        if bad is not None:
            return bad
        project = self.state.view(id_or_name, self.faults)
        # A team's project is invisible outside its team scope, as on Vercel.
        if project is None or request.query_params.get("teamId") != project.account_id:
            return _error(404, "not_found", "Project not found")
        return project


def _get_project(api: _VercelApi, request: Request) -> Response:
    p = api.scoped(request, request.path_params["id"])
    return p if isinstance(p, Response) else JSONResponse(p.as_json())


def _list_env(api: _VercelApi, request: Request) -> Response:
    p = api.scoped(request, request.path_params["id"])
    if isinstance(p, Response):
        return p
    paged = _page(request, p.envs, api.state.page_limit)
    if isinstance(paged, Response):
        return paged
    envs = []
    for e in paged[0]:
        shown = dict(e)
        if e["type"] == "encrypted":
            shown["value"] = ciphertext()  # never decrypted in a list
        elif e["type"] != "plain":
            shown["value"] = ""  # the schema wants a string; a sensitive one is empty
        envs.append(shown)
    return JSONResponse({"envs": envs, "pagination": paged[1]})


def _get_env(api: _VercelApi, request: Request) -> Response:
    p = api.scoped(request, request.path_params["id"])
    if isinstance(p, Response):
        return p
    e = next((e for e in p.envs if e["id"] == request.path_params["env"]), None)
    if e is None:
        return _error(404, "not_found", "Environment Variable not found")
    out = dict(e)
    if e["type"] == "sensitive":
        out.pop("value", None)
    else:
        out["decrypted"] = True
    return JSONResponse(out)


def _list_deployments(api: _VercelApi, request: Request) -> Response:
    p = api.scoped(request, request.query_params.get("projectId", ""))
    if isinstance(p, Response):
        return p
    target = request.query_params.get("target")
    # A preview deployment's target is null; ``target=preview`` selects them.
    wanted = None if target == "preview" else target
    items = [d for d in p.deployments if target is None or d["target"] == wanted]
    paged = _page(request, items, api.state.page_limit)
    if isinstance(paged, Response):
        return paged
    return JSONResponse({"deployments": [listed(d) for d in paged[0]],
                         "pagination": paged[1]})


def _get_deployment(api: _VercelApi, request: Request) -> Response:
    bad = api.guard(request)
    if bad is not None:
        return bad
    wanted = request.path_params["id"]
    state = api.state
    for project in (state.project, state.staging):
        p = state.view(project.id, api.faults)
        if p is None or request.query_params.get("teamId") != p.account_id:
            continue
        for d in p.deployments:
            if wanted in (d["id"], d["url"], *d["alias"]):
                return JSONResponse(d)
    return _error(404, "not_found", "Deployment not found")


def create_vercel_app(state: SandboxVercel, faults: Faults) -> Starlette:
    """The ASGI app of the sandbox's Vercel API: module-level routes bound to its state."""
    api = _VercelApi(state, faults)
    return Starlette(routes=[
        Route("/v9/projects/{id}", partial(_get_project, api)),
        *_write_routes(state, faults, api.guard, api.scoped),
        Route("/v10/projects/{id}/env", partial(_list_env, api)),
        Route("/v1/projects/{id}/env/{env}", partial(_get_env, api)),
        Route("/v7/deployments", partial(_list_deployments, api)),
        Route("/v6/deployments", partial(_list_deployments, api)),
        Route("/v13/deployments/{id}", partial(_get_deployment, api)),
    ])


def _write_routes(state: SandboxVercel, faults: Faults,
                  guard: Callable[[Request], Response | None],
                  scoped: Callable[[Request, str], SandboxProject | Response]) -> list[Route]:
    """The rollback's writes: a variable's value, a redeploy (`DeploySim`)."""

    async def edit_env(request: Request) -> Response:
        p = scoped(request, request.path_params["id"])
        if isinstance(p, Response):
            return p
        body = await _body(request)
        if body is None:
            return _error(400, "bad_request", "Invalid request: the body is not a JSON object")
        if p.id != state.project.id:
            return _error(403, "forbidden", "The sandbox edits only its own project")
        edited = state.deploys.edit_env(request.path_params["env"], body)
        if edited is None:
            return _error(404, "not_found", "Environment Variable not found")
        if edited["type"] == "encrypted":
            edited["value"] = ciphertext()
        return JSONResponse(edited)

    async def create_deployment(request: Request) -> Response:
        bad = guard(request)
        if bad is not None:
            return bad
        body = await _body(request)
        if body is None or not isinstance(body.get("deploymentId"), str):
            return _error(400, "bad_request", "Invalid request: the sandbox only redeploys: "
                          "give `deploymentId`")
        if request.query_params.get("teamId") != state.team_id:
            return _error(404, "not_found", "Deployment not found")
        given = body.get("meta")
        meta: dict[str, Any] = given if isinstance(given, dict) else {}
        target = body.get("target") if body.get("target") == "production" else None
        made = state.deploys.redeploy(body["deploymentId"], target,
                                      {str(k): str(v) for k, v in meta.items()},
                                      set(faults.active))
        if made is None:
            return _error(404, "not_found", "Deployment not found")
        return JSONResponse(made)

    return [Route("/v9/projects/{id}/env/{env}", edit_env, methods=["PATCH"]),
            Route("/v13/deployments", create_deployment, methods=["POST"])]
