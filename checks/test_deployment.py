"""Deployment and environment (runbook: Preflight, "Per deployment": the backend is neon,
DATABASE_URL present, the deployment is ready), read from the Vercel REST API: the
linked project is the one asked for, its variables by target, its latest production
deployment READY and serving OPS_BASE_URL. Read only.

Values of encrypted and sensitive variables are never shown: only their presence is
recorded, and ADMIN_STORAGE_BACKEND, when encrypted, is compared without being shown.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsgate.clients import vercel
from opsgate.config import Settings
from opsgate.errors import ConfigError, HttpCheckError, MissingEnvError
from opsgate.pytest_plugin.fixtures import fail
from opsgate.pytest_plugin.plugin import get_state
from opsgate.verify.evidence import bounded
from opsgate.verify.evidence_deployment import (
    BaseUrlHost,
    EnvTargets,
    LinkedProject,
    ProductionDeployment,
)
from opsgate.verify.evidence_types import EvidenceStore

pytestmark = pytest.mark.deployment

#: The Vercel targets the app must be configured for, and what each must hold.
TARGETS = ("production", "preview")
BACKEND = "ADMIN_STORAGE_BACKEND"
REQUIRED_KEYS = ("ADMIN_STORAGE_BACKEND", "DATABASE_URL")


@pytest.fixture
def link(ops_settings: Settings, pytestconfig: pytest.Config) -> vercel.ProjectLink:
    try:
        return vercel.resolve_link(ops_settings, Path(pytestconfig.invocation_params.dir))
    except (MissingEnvError, ConfigError) as exc:
        fail(str(exc))


@pytest.fixture
def api(ops_settings: Settings, link: vercel.ProjectLink, pytestconfig: pytest.Config
        ) -> Iterator[vercel.VercelApi]:
    try:
        with vercel.connect(ops_settings, link, get_state(pytestconfig).unreachable) as reader:
            yield reader
    except MissingEnvError as exc:
        fail(str(exc))


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except HttpCheckError as exc:  # VercelApiError included: one line, Vercel's code
        fail(str(exc))


def test_project_is_the_linked_one(api: vercel.VercelApi, link: vercel.ProjectLink,
                                   evidence: EvidenceStore) -> None:
    linked = LinkedProject(link.source, link.project_id, link.org_id)
    evidence.set(linked)
    if link.conflict:
        fail(f"VERCEL_PROJECT_ID is {link.project_id} but the project file names "
             f"{link.conflict}: which project this gate checks is unclear; make them agree")
    project = _call(api.project)
    evidence.set(replace(linked, project={k: project.get(k)
                                          for k in ("id", "name", "accountId")}))
    problems = []
    if link.project_id not in (project.get("id"), project.get("name")):
        problems.append(f"asked for project {link.project_id}, the API answered with "
                        f"{project.get('id')} ({project.get('name')})")
    if link.org_id and project.get("accountId") != link.org_id:
        problems.append(f"project {project.get('name')} belongs to account "
                        f"{project.get('accountId')}, not to VERCEL_ORG_ID {link.org_id}")
    if problems:
        fail("; ".join(problems))


def _applies(env: dict[str, Any], target: str) -> bool:
    """A variable of the whole target: listed for it and not tied to one git branch."""
    targets = env.get("target")
    listed = targets if isinstance(targets, list) else [targets]
    return target in listed and not env.get("gitBranch")


def test_env_by_target(api: vercel.VercelApi, evidence: EvidenceStore) -> None:
    envs = _call(api.envs)
    problems: list[str] = []
    shown: dict[str, dict[str, Any]] = {}
    for target in TARGETS:
        mine = [e for e in envs if _applies(e, target)]
        # Keys and types only: a plain value can still be something nobody meant to
        # publish, so the only value shown is ADMIN_STORAGE_BACKEND's, when plain.
        shown[target] = {"keys": {str(e.get("key")): str(e.get("type")) for e in mine}}
        for key in REQUIRED_KEYS:
            if not any(e.get("key") == key for e in mine):
                problems.append(f"{key} is not set for {target}")
        for e in (e for e in mine if e.get("key") == "DATABASE_URL"):
            if e.get("type") == "plain" and not e.get("value"):
                problems.append(f"DATABASE_URL is empty for {target}")
        for e in (e for e in mine if e.get("key") == BACKEND):
            kind = str(e.get("type"))
            if kind == "plain":
                value = e.get("value")
                shown[target][BACKEND] = value
                if value != "neon":
                    problems.append(f"{BACKEND} is {value!r} for {target}; it must be 'neon' "
                                    "('file' and 'blob' are fallback backends)")
            elif kind == "encrypted" and isinstance(e.get("id"), str):
                secret = _call(api.decrypted, e["id"], BACKEND)
                shown[target][BACKEND] = "(encrypted; compared, not shown)"
                if secret.reveal() != "neon":
                    problems.append(f"{BACKEND} for {target} is not 'neon' (value not shown: "
                                    "the variable is encrypted)")
            else:
                problems.append(f"{BACKEND} for {target} is of type {kind}, whose value "
                                "cannot be read back, so 'neon' cannot be verified; store it "
                                "as a plain variable")
    evidence.set(EnvTargets(shown, len(envs)))
    if problems:
        fail("; ".join(problems))


@pytest.fixture
def production(api: vercel.VercelApi, evidence: EvidenceStore) -> dict[str, Any]:
    """The latest production deployment, in full (``/v13/deployments``)."""
    latest = _call(api.latest_production_deployment)
    if latest is None:
        fail(f"project {api.link.project_id} has no production deployment")
    ident = latest.get("uid") or latest.get("id")
    if not isinstance(ident, str):
        fail("the latest production deployment has no id in the API's answer")
    found: dict[str, Any] = _call(api.deployment, ident)
    evidence.set(ProductionDeployment({
        "id": found.get("id"), "url": found.get("url"), "readyState": found.get("readyState"),
        "target": found.get("target"), "createdAt": found.get("createdAt"),
        "aliases": bounded(found.get("alias") or [], 20),
    }))
    return found


def test_latest_production_deployment_is_ready(production: dict[str, Any]) -> None:
    state = production.get("readyState")
    if state != "READY":
        detail = ""
        if production.get("errorCode") or production.get("errorMessage"):
            detail = (f" ({production.get('errorCode', '')}: "
                      f"{production.get('errorMessage', '')})")
        fail(f"the latest production deployment {production.get('id')} "
             f"({production.get('url')}) is {state}{detail}, not READY")


def test_base_url_is_served_by_it(production: dict[str, Any], ops_settings: Settings,
                                  evidence: EvidenceStore) -> None:
    try:
        base = ops_settings.require_base_url()
    except MissingEnvError as exc:
        fail(str(exc))
    host = httpx.URL(base).netloc.decode("ascii", "replace")
    names = [production.get("url"), *(production.get("alias") or [])]
    evidence.set(BaseUrlHost(host))
    if host not in names:
        shown = ", ".join(str(n) for n in bounded(names, 10)) or "none"
        state = production.get("readyState")
        why = ("" if state == "READY" else
               f"; it is {state}, so production's aliases stay on an earlier deployment: "
               "a consequence of the state test_latest_production_deployment_is_ready "
               "reports")
        fail(f"OPS_BASE_URL's host {host} is not served by the latest production "
             f"deployment {production.get('id')} of project {production.get('name')} "
             f"(its url and aliases: {shown}){why}")
