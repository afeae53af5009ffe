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
same), ``GET /v13/deployments/{idOrUrl}``; ``teamId`` on every request; Bearer auth;
errors as ``{"error": {"code", "message"}}``.

Lists are paged as Vercel pages them: newest first by ``createdAt``, ``limit`` items a
page (capped at `SandboxVercel.page_limit`), ``until``/``since`` timestamps select what
is older/newer, and ``pagination: {count, next, prev}`` gives the timestamps to pass on.

The sandbox's fault switches (`opsgate.sandbox.reference_app.Faults`) bend the answers
one precise way each, so the self-tests can prove the check goes red for that fault.
"""

from __future__ import annotations

import base64
import copy
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opsgate.sandbox.reference_app import Faults
from opsgate.sensitive import Secret

#: The faults this API understands (part of `reference_app.FAULTS`).
VERCEL_FAULTS = ("vercel-wrong-project", "vercel-backend-blob", "vercel-backend-sensitive",
                 "vercel-preview-backend-blob", "vercel-no-database-url",
                 "vercel-deploy-error", "vercel-deploy-building", "vercel-429", "vercel-503")

#: Where the sandbox's deployments "run" (Vercel's region id).
REGION = "iad1"


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(10)


def _ciphertext() -> str:
    """What Vercel lists for an encrypted value: opaque base64, no secret of ours."""
    return base64.b64encode(secrets.token_bytes(48)).decode()


def _ms(age_s: float) -> int:
    return int((time.time() - age_s) * 1000)


@dataclass
class SandboxProject:
    id: str
    name: str
    account_id: str
    domain: str  # its production domain (host[:port])
    created_at: int = field(default_factory=lambda: _ms(90 * 86400))
    envs: list[dict[str, Any]] = field(default_factory=list)
    #: Newest first, each in the full shape of ``GET /v13/deployments``.
    deployments: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """``GET /v9/projects``: what the check reads, and what the schema requires."""
        resources = {"functionDefaultRegions": [REGION], "functionDefaultTimeout": 300,
                     "functionDefaultMemoryType": "standard", "fluid": True}
        production = self.deployments[0]["createdAt"] if self.deployments else None
        return {
            "id": self.id, "name": self.name, "accountId": self.account_id,
            "framework": "nextjs", "nodeVersion": "22.x", "directoryListing": False,
            "createdAt": self.created_at,
            "updatedAt": production or self.created_at,
            "alias": [{"domain": d, "environment": "production", "target": "PRODUCTION",
                       "deployment": None, "createdAt": self.created_at}
                      for d in (self.domain, f"{self.name}.vercel.app")],
            "defaultResourceConfig": dict(resources),
            "resourceConfig": dict(resources),
            "deploymentExpiration": {"expirationDays": 180, "expirationDaysProduction": 365,
                                     "expirationDaysCanceled": 30,
                                     "expirationDaysErrored": 90, "deploymentsToKeep": 10},
        }


def _env(key: str, kind: str, targets: list[str], value: str, age_s: float,
         git_branch: str | None = None) -> dict[str, Any]:
    created = _ms(age_s)
    env = {"id": secrets.token_urlsafe(12), "key": key, "type": kind, "target": targets,
           "value": value, "configurationId": None, "createdAt": created,
           "updatedAt": created, "decrypted": False, "comment": "", "securityIssues": []}
    if git_branch is not None:  # Vercel leaves it out, rather than null, when unset
        env["gitBranch"] = git_branch
    return env


def _deployment(project: SandboxProject, state: str, aliases: list[str],
                age_s: float, target: str | None = "production", **extra: Any) -> dict[str, Any]:
    created = _ms(age_s)
    ident = _id("dpl_")
    url = f"{project.name}-{ident[4:13]}-sandbox.vercel.app"
    found = {
        "id": ident, "name": project.name, "url": url, "projectId": project.id,
        "ownerId": project.account_id, "target": target, "readyState": state,
        "status": state, "type": "LAMBDAS", "createdAt": created, "buildingAt": created,
        "bootedAt": created, "createdIn": REGION, "regions": [REGION], "version": 2,
        "alias": aliases, "aliasAssigned": bool(aliases), "automaticAliases": [],
        "source": "git", "creator": {"uid": "sandbox", "username": "sandbox"},
        "inspectorUrl": f"https://vercel.com/sandbox/{project.name}/{ident[4:]}",
        "build": {"env": []}, "env": [], "meta": {}, "plan": "pro", "public": False,
        "buildSkipped": False, "isInConcurrentBuildsQueue": False,
        "isInSystemBuildsQueue": False, "routes": None,
        "projectSettings": {"framework": "nextjs", "nodeVersion": "22.x"},
        **extra,
    }
    if state == "READY":
        found["ready"] = created + 60_000
        found["readySubstate"] = "PROMOTED" if aliases else "STAGED"
    return found


def _listed(d: dict[str, Any]) -> dict[str, Any]:
    """A deployment as ``GET /v7/deployments`` lists it: ``uid``, ``state`` and the
    alias time, not the full record (no ``alias`` list, no ``id``)."""
    out = {"uid": d["id"], "name": d["name"], "url": d["url"], "created": d["createdAt"],
           "createdAt": d["createdAt"], "buildingAt": d["buildingAt"],
           "state": d["readyState"], "readyState": d["readyState"], "type": d["type"],
           "target": d["target"], "projectId": d["projectId"], "source": d["source"],
           "creator": d["creator"], "inspectorUrl": d["inspectorUrl"], "meta": d["meta"],
           "aliasAssigned": d["createdAt"] + 61_000 if d["aliasAssigned"] else None,
           "aliasError": None, "isRollbackCandidate": d["readyState"] == "READY"}
    for key in ("ready", "readySubstate", "errorCode", "errorMessage"):
        if key in d:
            out[key] = d[key]
    return out


def _project(name: str, team_id: str, domain: str) -> SandboxProject:
    p = SandboxProject(_id("prj_"), name, team_id, domain)
    day = 86400.0
    p.envs = [
        _env("ADMIN_STORAGE_BACKEND", "plain", ["production"], "neon", 30 * day),
        # Encrypted for preview, so that a clean run reads one value back decrypted.
        _env("ADMIN_STORAGE_BACKEND", "encrypted", ["preview"], "neon", 29 * day),
        _env("ADMIN_STORAGE_BACKEND", "plain", ["development"], "file", 28 * day),
        # A branch's own value, which is not the preview target's: the check skips it.
        _env("ADMIN_STORAGE_BACKEND", "plain", ["preview"], "blob", 27 * day,
             git_branch="legacy-blob"),
        _env("DATABASE_URL", "encrypted", ["production", "preview", "development"],
             _ciphertext(), 26 * day),
        _env("DATABASE_URL_UNPOOLED", "encrypted", ["production", "preview"], _ciphertext(),
             25 * day),
        _env("ADMIN_PASSWORD", "sensitive", ["production", "preview"], "", 24 * day),
        _env("BLOB_READ_WRITE_TOKEN", "encrypted", ["production", "preview"], _ciphertext(),
             23 * day),
    ]
    # A history deep enough to page through: the live production deployment, a preview
    # deployment newer than it (the target filter must skip it), older production ones
    # and one that failed along the way.
    p.deployments = [
        _deployment(p, "READY", [], age_s=600, target=None),
        _deployment(p, "READY", [domain, f"{name}.vercel.app"], age_s=3600),
        _deployment(p, "READY", [], age_s=day),
        _deployment(p, "ERROR", [], age_s=1.5 * day, errorCode="BUILD_FAILED",
                    errorMessage="Command \"next build\" exited with 1"),
        _deployment(p, "READY", [], age_s=2 * day),
        _deployment(p, "READY", [], age_s=3 * day),
    ]
    return p


class SandboxVercel:
    """The team, its two projects, and how faults bend them."""

    def __init__(self, token: Secret, base_host: str) -> None:
        self.token = token
        self.team_id = _id("team_")
        self.project = _project("constellation", self.team_id, base_host)
        self.staging = _project("constellation-staging", self.team_id,
                                "staging.constellation.example")
        # Made once, so that a listed id is found again by the next request.
        self.failed = _deployment(self.project, "ERROR", [], age_s=60,
                                  errorCode="BUILD_FAILED",
                                  errorMessage='Command "next build" exited with 1')
        self.building = _deployment(self.project, "BUILDING", [], age_s=30)
        #: The most items one page holds, whatever ``limit`` asks (Vercel caps it too);
        #: a self-test lowers it to make every list span pages.
        self.page_limit = 100
        #: What ``vercel-429`` says in ``Retry-After`` (seconds).
        self.retry_after_s = 1
        self._requests = 0

    def env_values(self) -> dict[str, str]:
        """The sandbox's VERCEL_* variables (the token revealed, for its env file)."""
        return {"VERCEL_TOKEN": self.token.reveal(), "VERCEL_PROJECT_ID": self.project.id,
                "VERCEL_ORG_ID": self.team_id}

    def overloaded(self, faults: Faults) -> Response | None:
        """The answer of an API under load, when a fault says so: ``vercel-503`` refuses
        every request; ``vercel-429`` every other one, asking to retry after
        `retry_after_s`, so a client that honours it gets through on its second try."""
        if "vercel-503" in faults.active:
            return _error(503, "service_unavailable",
                          "The Vercel API is temporarily unavailable")
        if "vercel-429" in faults.active:
            self._requests += 1
            if self._requests % 2 == 1:
                reset = int(time.time()) + self.retry_after_s
                headers = {"Retry-After": str(self.retry_after_s),
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


def create_vercel_app(state: SandboxVercel, faults: Faults) -> Starlette:
    """The ASGI app of the sandbox's Vercel API."""

    def guard(request: Request) -> Response | None:
        busy = state.overloaded(faults)
        if busy is not None:
            return busy
        given = request.headers.get("authorization", "")
        expected = f"Bearer {state.token.reveal()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _error(403, "forbidden", "Not authorized", invalidToken=True)
        return None

    def scoped(request: Request, id_or_name: str) -> SandboxProject | Response:
        bad = guard(request)
        if bad is not None:
            return bad
        project = state.view(id_or_name, faults)
        # A team's project is invisible outside its team scope, as on Vercel.
        if project is None or request.query_params.get("teamId") != project.account_id:
            return _error(404, "not_found", "Project not found")
        return project

    def get_project(request: Request) -> Response:
        p = scoped(request, request.path_params["id"])
        return p if isinstance(p, Response) else JSONResponse(p.as_json())

    def list_env(request: Request) -> Response:
        p = scoped(request, request.path_params["id"])
        if isinstance(p, Response):
            return p
        paged = _page(request, p.envs, state.page_limit)
        if isinstance(paged, Response):
            return paged
        envs = []
        for e in paged[0]:
            shown = dict(e)
            if e["type"] == "encrypted":
                shown["value"] = _ciphertext()  # never decrypted in a list
            elif e["type"] != "plain":
                shown["value"] = ""  # the schema wants a string; a sensitive one is empty
            envs.append(shown)
        return JSONResponse({"envs": envs, "pagination": paged[1]})

    def get_env(request: Request) -> Response:
        p = scoped(request, request.path_params["id"])
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

    def list_deployments(request: Request) -> Response:
        p = scoped(request, request.query_params.get("projectId", ""))
        if isinstance(p, Response):
            return p
        target = request.query_params.get("target")
        items = [d for d in p.deployments if target in (None, d["target"])]
        paged = _page(request, items, state.page_limit)
        if isinstance(paged, Response):
            return paged
        return JSONResponse({"deployments": [_listed(d) for d in paged[0]],
                             "pagination": paged[1]})

    def get_deployment(request: Request) -> Response:
        bad = guard(request)
        if bad is not None:
            return bad
        wanted = request.path_params["id"]
        for project in (state.project, state.staging):
            p = state.view(project.id, faults)
            if p is None or request.query_params.get("teamId") != p.account_id:
                continue
            for d in p.deployments:
                if wanted in (d["id"], d["url"]):
                    return JSONResponse(d)
        return _error(404, "not_found", "Deployment not found")

    return Starlette(routes=[
        Route("/v9/projects/{id}", get_project),
        Route("/v10/projects/{id}/env", list_env),
        Route("/v1/projects/{id}/env/{env}", get_env),
        Route("/v7/deployments", list_deployments),
        Route("/v6/deployments", list_deployments),
        Route("/v13/deployments/{id}", get_deployment),
    ])
