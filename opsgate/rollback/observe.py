"""What is true now, read only: per environment the backend in Vercel's variables, the
deployment serving and any redeploy after it, the backend the app reports; and whether
the blob fallback holds the same admin state as Neon (canon-v1).

Every decision of `opsgate.rollback.switch` is made from a fresh `Observation`, never
from what a previous run wrote down: that is what makes a re-run safe and a run stopped
half-way (variable edited, deployment not READY, Ctrl-C) resumable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any

import httpx

from opsgate.clients import db
from opsgate.clients import web as http
from opsgate.clients.blob import open_admin_state
from opsgate.clients.vercel import VercelApi
from opsgate.config import Settings
from opsgate.errors import BlobError, HttpCheckError, OpsgateError, VercelApiError
from opsgate.verify.blob_parity import compare, store_for

ENVIRONMENTS = ("production", "preview")
BACKEND = "ADMIN_STORAGE_BACKEND"
BACKENDS = ("neon", "blob")
#: Vercel's states of a deployment still on its way.
UNDER_WAY = ("QUEUED", "INITIALIZING", "BUILDING")


@dataclass
class EnvView:
    environment: str
    env_id: str | None = None
    env_type: str | None = None
    #: The variable's value (``neon``/``blob``), ``other``, or None when unreadable.
    env_backend: str | None = None
    #: When the variable was last changed (ms): a deployment older than it runs with
    #: the value before.
    env_updated_at: int | None = None
    #: The deployment serving this environment: ``{id, url, readyState, createdAt}``.
    serving: dict[str, Any] | None = None
    #: The newest deployment after the serving one, when there is one (a redeploy
    #: under way, or one that ended in ERROR, or READY without the aliases).
    newer: dict[str, Any] | None = None
    #: What ``GET /api/admin/overview`` reports (production only): backend and counts.
    app_backend: str | None = None
    app_counts: dict[str, int] | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class Fallback:
    usable: bool
    problem: str | None = None
    blob_hash: str | None = None
    neon_hash: str | None = None
    blob_counts: dict[str, int] = field(default_factory=dict)
    neon_counts: dict[str, int] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)

    @property
    def current(self) -> bool:
        return self.usable and self.blob_hash is not None and self.blob_hash == self.neon_hash


@dataclass
class Observation:
    project: dict[str, str]
    envs: dict[str, EnvView]
    fallback: Fallback

    def as_json(self) -> dict[str, Any]:
        return {"project": dict(self.project),
                "environments": {k: asdict(v) for k, v in self.envs.items()},
                "fallback": {**asdict(self.fallback), "current": self.fallback.current}}


def _short(d: dict[str, Any]) -> dict[str, Any]:
    return {"id": d.get("id") or d.get("uid"), "url": d.get("url"),
            "readyState": d.get("readyState"), "createdAt": d.get("createdAt"),
            "meta": d.get("meta") or {}}


def production_domain(project: dict[str, Any], settings: Settings) -> str:
    """The project's production domain (its production alias), else OPS_BASE_URL's
    host: the name ``GET /v13/deployments/{idOrUrl}`` resolves to the serving one."""
    for alias in project.get("alias") or []:
        if isinstance(alias, dict) and alias.get("environment") == "production":
            return str(alias["domain"])
    if settings.ops_base_url:
        return httpx.URL(settings.ops_base_url).netloc.decode()
    raise VercelApiError(f"Vercel project {project.get('name')}: no production domain "
                         "in its aliases, and OPS_BASE_URL is not set")


def read_env_backend(api: VercelApi, environment: str, view: EnvView) -> None:
    """The environment's own ``ADMIN_STORAGE_BACKEND`` (not a git branch's)."""
    found = [e for e in api.envs() if e.get("key") == BACKEND
             and environment in (e.get("target") or []) and not e.get("gitBranch")]
    if not found:
        view.problems.append(f"{BACKEND} is not set for {environment}")
        return
    env = found[0]
    view.env_id, view.env_type = str(env["id"]), str(env.get("type"))
    updated = env.get("updatedAt")
    view.env_updated_at = updated if isinstance(updated, int) else None
    if view.env_type == "plain":
        value = str(env.get("value"))
    elif view.env_type == "encrypted":
        value = api.decrypted(view.env_id, BACKEND).reveal()
    else:
        view.problems.append(f"{BACKEND} is {view.env_type} for {environment}: its value "
                             "cannot be read back, so a switch cannot be confirmed")
        return
    view.env_backend = value if value in BACKENDS else "other"


def read_deployments(api: VercelApi, environment: str, domain: str, view: EnvView) -> None:
    """The serving deployment (production: the one the production domain points at;
    preview: the newest READY one) and the newest one after it, if any."""
    recent = list(islice(api.deployments(environment, limit=20), 20))
    if environment == "production":
        view.serving = _short(api.deployment(domain))
    else:
        ready = next((d for d in recent if d.get("readyState") == "READY"), None)
        view.serving = _short(ready) if ready else None
    if view.serving is None:
        view.problems.append(f"no {environment} deployment is serving")
        return
    after = [d for d in recent if int(d.get("createdAt") or 0) > int(view.serving["createdAt"])]
    view.newer = _short(after[0]) if after else None


def read_app(settings: Settings, view: EnvView) -> None:
    """What the serving app says it uses, from its admin overview."""
    try:
        password = settings.require_admin_password()
        with http.client(settings.require_base_url(), timeout=settings.http_timeout) as cl:
            login = http.request(cl, "POST", "/api/admin/session", what="admin login",
                                 json={"password": password.reveal()})
            if login.status_code in (401, 403):
                raise HttpCheckError(f"admin login refused ADMIN_PASSWORD (HTTP "
                                     f"{login.status_code})")
            http.expect_json(login, what="admin login")
            body = http.expect_json(http.request(cl, "GET", "/api/admin/overview",
                                                 what="admin overview"), what="admin overview")
    except (OpsgateError, httpx.HTTPError) as exc:
        view.problems.append(f"the app's admin overview: {settings.redactor()(str(exc))}")
        return
    if isinstance(body, dict):
        view.app_backend = str(body.get("backend"))
        counts = body.get("counts")
        view.app_counts = dict(counts) if isinstance(counts, dict) else None


def read_fallback(settings: Settings) -> Fallback:
    """The blob fallback against Neon, canon-v1, streamed (`blob_parity.compare`)."""
    try:
        state = open_admin_state(store_for(settings), settings.admin_blob_prefix)
        conn = db.connect(settings.require_database_url(), redact=settings.redactor(),
                          what="Neon")
        with conn, db.reading(conn):
            result = compare(state, conn)
    except BlobError as exc:
        return Fallback(False, f"the blob fallback is not usable: {exc}")
    except OpsgateError as exc:
        return Fallback(False, str(exc))
    if not result.blob_counts.get("content_state_keys"):
        return Fallback(False, "the blob fallback holds no content state",
                        result.blob_hash, result.neon_hash)
    return Fallback(True, None, result.blob_hash, result.neon_hash, result.blob_counts,
                    result.neon_counts, result.lines())


def observe(api: VercelApi, settings: Settings, environments: tuple[str, ...]) -> Observation:
    project = api.project()
    domain = production_domain(project, settings)
    envs = {}
    for environment in environments:
        view = EnvView(environment)
        read_env_backend(api, environment, view)
        read_deployments(api, environment, domain, view)
        if environment == "production":
            read_app(settings, view)
        envs[environment] = view
    return Observation({"id": str(project.get("id")), "name": str(project.get("name")),
                        "domain": domain}, envs, read_fallback(settings))
