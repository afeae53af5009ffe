"""Evidence of the checks that ask the deployment and Vercel: preflight's answer from
the deployment, and the deployment check's project, variables and production
deployment. Never a variable's value but ADMIN_STORAGE_BACKEND's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeploymentAnswer:
    """preflight: how the deployment answered ``GET /`` (``location`` for a redirect)."""

    status: int
    elapsed_ms: float
    redirect: bool = False
    location: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "elapsed_ms": self.elapsed_ms}
        if self.redirect:
            out["location"] = self.location
        return out


@dataclass(frozen=True)
class LinkedProject:
    """deployment: which project the gate checks, how it was linked, and (once asked)
    the project the API answered with (``id``, ``name``, ``accountId``)."""

    linked_by: str
    project_id: str
    org_id: str | None
    project: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"linked_by": self.linked_by, "project_id": self.project_id,
                               "org_id": self.org_id}
        if self.project is not None:
            out["project"] = self.project
        return out


@dataclass(frozen=True)
class EnvTargets:
    """deployment: per target, its variables' keys and types (and the backend's value
    when plain), and how many variables the API listed."""

    targets: dict[str, dict[str, Any]]
    variables_listed: int

    def as_json(self) -> dict[str, Any]:
        return {"targets": self.targets, "variables_listed": self.variables_listed}


@dataclass(frozen=True)
class ProductionDeployment:
    """deployment: the latest production deployment (id, url, readyState, target,
    createdAt and its first aliases)."""

    deployment: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"deployment": self.deployment}


@dataclass(frozen=True)
class BaseUrlHost:
    host: str

    def as_json(self) -> dict[str, Any]:
        return {"OPS_BASE_URL host": self.host}
