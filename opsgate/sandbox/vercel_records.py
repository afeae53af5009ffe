"""What the sandbox's Vercel API holds: a project, its environment variables and its
deployments, each built with every field Vercel's published schemas require (the
official SDK validates them in a self-test), so the API module only pages, scopes and
bends them.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

#: Where the sandbox's deployments "run" (Vercel's region id).
REGION = "iad1"


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(10)


def ciphertext() -> str:
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


def make_deployment(project: SandboxProject, state: str, aliases: list[str],
                age_s: float, target: str | None = "production", **extra: Any) -> dict[str, Any]:
    created = _ms(age_s)
    ident = new_id("dpl_")
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


def listed(d: dict[str, Any]) -> dict[str, Any]:
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


def make_project(name: str, team_id: str, domain: str) -> SandboxProject:
    p = SandboxProject(new_id("prj_"), name, team_id, domain)
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
             ciphertext(), 26 * day),
        _env("DATABASE_URL_UNPOOLED", "encrypted", ["production", "preview"], ciphertext(),
             25 * day),
        _env("ADMIN_PASSWORD", "sensitive", ["production", "preview"], "", 24 * day),
        _env("BLOB_READ_WRITE_TOKEN", "encrypted", ["production", "preview"], ciphertext(),
             23 * day),
    ]
    # A history deep enough to page through: the live production deployment, a preview
    # deployment newer than it (the target filter must skip it), older production ones
    # and one that failed along the way.
    p.deployments = [
        make_deployment(p, "READY", [], age_s=600, target=None),
        make_deployment(p, "READY", [domain, f"{name}.vercel.app"], age_s=3600),
        make_deployment(p, "READY", [], age_s=day),
        make_deployment(p, "ERROR", [], age_s=1.5 * day, errorCode="BUILD_FAILED",
                    errorMessage="Command \"next build\" exited with 1"),
        make_deployment(p, "READY", [], age_s=2 * day),
        make_deployment(p, "READY", [], age_s=3 * day),
    ]
    return p
