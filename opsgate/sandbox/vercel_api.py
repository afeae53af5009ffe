"""The subset of the Vercel REST API the deployment check reads, served by the sandbox:
a team with two projects (the app, and a staging copy whose production domain is
another), their environment variables and production deployments.

Shapes as Vercel documents them: ``GET /v9/projects/{idOrName}``,
``GET /v10/projects/{idOrName}/env`` (``type`` plain/encrypted/sensitive, ``target``
list, ``gitBranch``; encrypted values come back encrypted unless read one by one through
``GET /v1/projects/{idOrName}/env/{id}``; sensitive ones never come back),
``GET /v6/deployments?projectId&target=production`` (newest first),
``GET /v13/deployments/{idOrUrl}``; ``teamId`` on every request; Bearer auth; errors as
``{"error": {"code", "message"}}``.

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
                 "vercel-deploy-error", "vercel-deploy-building")


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(10)


def _ciphertext() -> str:
    """What Vercel lists for an encrypted value: opaque base64, no secret of ours."""
    return base64.b64encode(secrets.token_bytes(48)).decode()


@dataclass
class SandboxProject:
    id: str
    name: str
    account_id: str
    domain: str  # its production domain (host[:port])
    envs: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "accountId": self.account_id,
                "framework": "nextjs", "createdAt": self.deployments[-1]["createdAt"],
                "updatedAt": self.deployments[0]["createdAt"]}


def _env(key: str, kind: str, targets: list[str], value: str,
         git_branch: str | None = None) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {"id": secrets.token_urlsafe(12), "key": key, "type": kind, "target": targets,
            "gitBranch": git_branch, "value": value, "configurationId": None,
            "createdAt": now, "updatedAt": now, "decrypted": False, "comment": ""}


def _deployment(project: SandboxProject, state: str, aliases: list[str],
                age_s: float, **extra: Any) -> dict[str, Any]:
    created = int((time.time() - age_s) * 1000)
    ident = _id("dpl_")
    url = f"{project.name}-{ident[4:13]}-sandbox.vercel.app"
    return {"id": ident, "uid": ident, "name": project.name, "url": url,
            "projectId": project.id, "target": "production", "readyState": state,
            "state": state, "type": "LAMBDAS", "createdAt": created, "created": created,
            "buildingAt": created, "ready": created + 60_000 if state == "READY" else None,
            "alias": aliases, "aliasAssigned": created + 61_000 if aliases else None,
            "source": "git", "creator": {"uid": "sandbox", "username": "sandbox"},
            **extra}


def _project(name: str, team_id: str, domain: str) -> SandboxProject:
    p = SandboxProject(_id("prj_"), name, team_id, domain)
    p.envs = [
        _env("ADMIN_STORAGE_BACKEND", "plain", ["production"], "neon"),
        # Encrypted for preview, so that a clean run reads one value back decrypted.
        _env("ADMIN_STORAGE_BACKEND", "encrypted", ["preview"], "neon"),
        _env("ADMIN_STORAGE_BACKEND", "plain", ["development"], "file"),
        # A branch's own value, which is not the preview target's: the check skips it.
        _env("ADMIN_STORAGE_BACKEND", "plain", ["preview"], "blob", git_branch="legacy-blob"),
        _env("DATABASE_URL", "encrypted", ["production", "preview", "development"],
             _ciphertext()),
        _env("DATABASE_URL_UNPOOLED", "encrypted", ["production", "preview"], _ciphertext()),
        _env("ADMIN_PASSWORD", "sensitive", ["production", "preview"], ""),
        _env("BLOB_READ_WRITE_TOKEN", "encrypted", ["production", "preview"], _ciphertext()),
    ]
    p.deployments = [
        _deployment(p, "READY", [domain, f"{name}.vercel.app"], age_s=3600),
        _deployment(p, "READY", [], age_s=86400),
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

    def env_values(self) -> dict[str, str]:
        """The sandbox's VERCEL_* variables (the token revealed, for its env file)."""
        return {"VERCEL_TOKEN": self.token.reveal(), "VERCEL_PROJECT_ID": self.project.id,
                "VERCEL_ORG_ID": self.team_id}

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
            if e["key"] != "ADMIN_STORAGE_BACKEND" or e["gitBranch"]:
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
            p.deployments.insert(0, copy.deepcopy(self.failed))
        if "vercel-deploy-building" in faults.active:
            p.deployments.insert(0, copy.deepcopy(self.building))
        return p


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}},
                        status_code=status)


def create_vercel_app(state: SandboxVercel, faults: Faults) -> Starlette:
    """The ASGI app of the sandbox's Vercel API."""

    def guard(request: Request) -> Response | None:
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
        envs = []
        for e in p.envs:
            shown = {k: v for k, v in e.items() if k != "value"}
            if e["type"] == "plain":
                shown["value"] = e["value"]
            elif e["type"] == "encrypted":
                shown["value"] = _ciphertext()  # never decrypted in a list
            envs.append(shown)
        return JSONResponse({"envs": envs})

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
        limit = int(request.query_params.get("limit", "20"))
        keep = ("uid", "name", "url", "created", "createdAt", "state", "readyState",
                "target", "projectId", "type", "creator", "source", "buildingAt", "ready",
                "aliasAssigned")
        shown = [{k: d.get(k) for k in keep} for d in items[:limit]]
        return JSONResponse({"deployments": shown, "pagination": {
            "count": len(shown), "next": None, "prev": None}})

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
                    return JSONResponse({k: v for k, v in d.items() if k != "uid"})
        return _error(404, "not_found", "Deployment not found")

    return Starlette(routes=[
        Route("/v9/projects/{id}", get_project),
        Route("/v10/projects/{id}/env", list_env),
        Route("/v1/projects/{id}/env/{env}", get_env),
        Route("/v6/deployments", list_deployments),
        Route("/v13/deployments/{id}", get_deployment),
    ])
