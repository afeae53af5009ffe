"""What the sandbox's Vercel API does when it is written to: environment variable edits,
redeploys that move through Vercel's states, alias moves, and the env snapshot each
deployment runs with.

As on Vercel, a deployment keeps the variables it was built with: editing
``ADMIN_STORAGE_BACKEND`` changes what the *next* deployment gets, and the app keeps
serving from the backend of the deployment that holds the production domain
(`DeploySim.serving_backend`). A redeploy (``POST /v13/deployments`` with
``deploymentId``) is ``QUEUED``, then ``BUILDING``, then ``READY`` (a production one then
takes the production aliases) or ``ERROR``, on a clock the self-tests shorten.

Faults, each fixed when the redeploy is created: ``vercel-redeploy-error`` (it ends in
ERROR, the old deployment keeps serving), ``vercel-redeploy-stuck`` (it never leaves
BUILDING), ``vercel-alias-stuck`` (READY, but the aliases stay on the old one),
``vercel-redeploy-stale-env`` (it is built with the old deployment's variables).
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from opsgate.sandbox.vercel_records import SandboxProject, make_deployment

#: The faults of this module (part of `reference_app.FAULTS`).
DEPLOY_FAULTS = ("vercel-redeploy-error", "vercel-redeploy-stuck", "vercel-alias-stuck",
                 "vercel-redeploy-stale-env")

BACKEND = "ADMIN_STORAGE_BACKEND"


@dataclass
class _Pending:
    started: float
    outcome: str  # READY, ERROR, or BUILDING for ever
    move_aliases: bool


@dataclass
class DeploySim:
    """Snapshots, pending redeploys and the request log of one sandbox project."""

    project: SandboxProject
    #: Seconds a redeploy spends QUEUED, then BUILDING.
    queued_s: float = 0.2
    building_s: float = 0.4
    #: Every request as (method, path): a self-test proves a dry run wrote nothing.
    requests: list[tuple[str, str]] = field(default_factory=list)
    snapshots: dict[str, dict[str, str]] = field(default_factory=dict)
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for d in self.project.deployments:
            self.snapshots[d["id"]] = self.env_for(d["target"])

    def env_for(self, target: str | None) -> dict[str, str]:
        """The plain values a new deployment to ``target`` (None: preview) is built with
        (the sandbox keeps encrypted values in the clear: it is their store)."""
        env = "preview" if target is None else target
        return {e["key"]: e["value"] for e in self.project.envs
                if env in e["target"] and not e.get("gitBranch")
                and e["key"] == BACKEND}

    def serving(self) -> dict[str, Any]:
        """The deployment the production domain points at."""
        self.advance()
        return next(d for d in self.project.deployments if self.project.domain in d["alias"])

    def serving_backend(self) -> str:
        return self.snapshots.get(self.serving()["id"], {}).get(BACKEND, "neon")

    def edit_env(self, env_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            found = next((e for e in self.project.envs if e["id"] == env_id), None)
            if found is None:
                return None
            if isinstance(body.get("value"), str):
                found["value"] = body["value"]
            if isinstance(body.get("target"), list):
                found["target"] = list(body["target"])
            found["updatedAt"] = int(time.time() * 1000)
            return copy.deepcopy(found)

    def redeploy(self, source_id: str, target: str | None, meta: dict[str, str],
                 faults: set[str]) -> dict[str, Any] | None:
        with self._lock:
            source = next((d for d in self.project.deployments if d["id"] == source_id), None)
            if source is None:
                return None
            new = make_deployment(self.project, "QUEUED", [], age_s=0, target=target,
                                  meta=dict(meta))
            new["readyState"] = new["status"] = "QUEUED"
            stale = "vercel-redeploy-stale-env" in faults
            self.snapshots[new["id"]] = (dict(self.snapshots.get(source_id, {})) if stale
                                         else self.env_for(target))
            outcome = ("ERROR" if "vercel-redeploy-error" in faults else
                       "BUILDING" if "vercel-redeploy-stuck" in faults else "READY")
            self._pending[new["id"]] = _Pending(time.monotonic(), outcome,
                                                "vercel-alias-stuck" not in faults)
            self.project.deployments.insert(0, new)
            return copy.deepcopy(new)

    def advance(self) -> None:
        """Moves every pending redeploy on to the state its age gives it."""
        with self._lock:
            for ident, pending in list(self._pending.items()):
                d = next(x for x in self.project.deployments if x["id"] == ident)
                age = time.monotonic() - pending.started
                state = ("QUEUED" if age < self.queued_s else
                         "BUILDING" if age < self.queued_s + self.building_s
                         else pending.outcome)
                d["readyState"] = d["status"] = state
                if state in ("QUEUED", "BUILDING"):
                    continue
                del self._pending[ident]
                if state == "ERROR":
                    d.update(errorCode="BUILD_FAILED",
                             errorMessage='Command "next build" exited with 1')
                    continue
                d["ready"] = int(time.time() * 1000)
                d["readySubstate"] = "STAGED"
                if pending.move_aliases and d["target"] == "production":
                    self._move_aliases(d)

    def _move_aliases(self, to: dict[str, Any]) -> None:
        names = [self.project.domain, f"{self.project.name}.vercel.app"]
        for d in self.project.deployments:
            d["alias"] = [a for a in d["alias"] if a not in names]
            d["aliasAssigned"] = bool(d["alias"])
        to["alias"], to["aliasAssigned"], to["readySubstate"] = names, True, "PROMOTED"
