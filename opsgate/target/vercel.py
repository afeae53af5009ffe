"""The Vercel REST API, as far as the deployment check reads it: the project, its
environment variables by target, its production deployments.

Endpoints and shapes as Vercel documents them: ``GET /v9/projects/{idOrName}``,
``GET /v10/projects/{idOrName}/env``, ``GET /v1/projects/{idOrName}/env/{id}`` (one
decrypted value), ``GET /v6/deployments?projectId=&target=production``,
``GET /v13/deployments/{idOrUrl}``; ``Authorization: Bearer <token>``, ``teamId`` on
every request of a team's project, errors as ``{"error": {"code", "message"}}``.

The token lives in the client's headers only: never in a URL, a message or a repr.
Values of ``encrypted`` and ``sensitive`` variables are secrets: a decrypted value comes
back as a `Secret` and is only ever compared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from opsgate.config import Settings
from opsgate.errors import ConfigError, HttpCheckError, MissingEnvError, VercelApiError
from opsgate.sensitive import Secret
from opsgate.target import web as http

#: Variable types whose values are secrets (Vercel's ``type``); ``plain`` is not.
SECRET_TYPES = frozenset({"encrypted", "sensitive", "secret"})


@dataclass(frozen=True)
class ProjectLink:
    """Which project, on whose account, and where that was read."""

    project_id: str
    org_id: str | None
    source: str
    #: The project file's projectId when it disagrees with VERCEL_PROJECT_ID.
    conflict: str | None = None

    @property
    def team_id(self) -> str | None:
        """What goes in ``teamId``: a team's id (``team_…``). A personal account's id is
        no team, and Vercel refuses it there, as its CLI knows."""
        return self.org_id if self.org_id and self.org_id.startswith("team_") else None


def resolve_link(settings: Settings, cwd: Path) -> ProjectLink:
    """VERCEL_PROJECT_ID / VERCEL_ORG_ID, else the ``vercel link`` file. A file that
    names another project than the variable is recorded as a conflict (the check says
    which project is meant is unclear); an unreadable file is an error naming it."""
    path = Path(settings.vercel_project_file)
    if not path.is_absolute():
        path = cwd / path
    linked: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"{settings.vercel_project_file}: not a readable JSON "
                                 f"project file ({exc.__class__.__name__})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{settings.vercel_project_file}: not a JSON object")
        linked = {k: v for k, v in loaded.items() if isinstance(v, str) and v}
    file_project, file_org = linked.get("projectId"), linked.get("orgId")
    if settings.vercel_project_id:
        conflict = (file_project if file_project and file_project != settings.vercel_project_id
                    else None)
        return ProjectLink(settings.vercel_project_id, settings.vercel_org_id or file_org,
                           "VERCEL_PROJECT_ID", conflict)
    if file_project:
        return ProjectLink(file_project, settings.vercel_org_id or file_org,
                           settings.vercel_project_file)
    raise MissingEnvError("VERCEL_PROJECT_ID", f"the Vercel project; or link the project so "
                          f"that {settings.vercel_project_file} names it")


class VercelApi:
    """A thin reader of the REST API over one httpx client."""

    def __init__(self, client: httpx.Client, link: ProjectLink) -> None:
        self.client = client
        self.link = link

    def get(self, path: str, what: str, **params: str) -> Any:
        query = dict(params)
        if self.link.team_id:
            query["teamId"] = self.link.team_id
        resp = http.request(self.client, "GET", path, what=what, params=query)
        if resp.status_code >= 400:
            # 401/403 is nearly always the token (wrong, expired, or not of this team):
            # say which variable to look at.
            hint = ("; the Vercel API refused VERCEL_TOKEN: check it is valid and has "
                    "access to this project's team" if resp.status_code in (401, 403) else "")
            raise VercelApiError(f"{what}: {_error_line(resp)}{hint}")
        try:
            return http.expect_json(resp, what=what)
        except HttpCheckError as exc:  # a redirect, a body that is not JSON
            raise VercelApiError(str(exc)) from None

    def project(self) -> dict[str, Any]:
        found = self.get(f"/v9/projects/{self.link.project_id}",
                         f"Vercel project {self.link.project_id}")
        return _object(found, "project")

    def envs(self) -> list[dict[str, Any]]:
        found = _object(self.get(f"/v10/projects/{self.link.project_id}/env",
                                 "Vercel environment variables", decrypt="false"), "env list")
        envs = found.get("envs")
        if not isinstance(envs, list):
            raise VercelApiError("Vercel environment variables: the answer has no 'envs' list")
        return [e for e in envs if isinstance(e, dict)]

    def decrypted(self, env_id: str, key: str) -> Secret:
        """One variable's decrypted value (for an ``encrypted`` one), as a Secret."""
        found = _object(self.get(f"/v1/projects/{self.link.project_id}/env/{env_id}",
                                 f"Vercel variable {key} (decrypted)"), "env")
        value = found.get("value")
        if not isinstance(value, str) or found.get("decrypted") is False:
            raise VercelApiError(f"Vercel variable {key}: the API gave no decrypted value")
        return Secret(value)

    def latest_production_deployment(self) -> dict[str, Any] | None:
        found = _object(self.get("/v6/deployments", "Vercel production deployments",
                                 projectId=self.link.project_id, target="production",
                                 limit="1"), "deployment list")
        items = found.get("deployments")
        if not isinstance(items, list):
            raise VercelApiError("Vercel production deployments: the answer has no "
                                 "'deployments' list")
        return items[0] if items and isinstance(items[0], dict) else None

    def deployment(self, id_or_url: str) -> dict[str, Any]:
        return _object(self.get(f"/v13/deployments/{id_or_url}",
                                f"Vercel deployment {id_or_url}"), "deployment")


def _object(found: Any, what: str) -> dict[str, Any]:
    if not isinstance(found, dict):
        raise VercelApiError(f"Vercel {what}: the answer is not a JSON object")
    return found


def _error_line(resp: httpx.Response) -> str:
    """``GET /v9/projects/x answered HTTP 404 not_found: Project not found``, from
    Vercel's error shape, or the first bytes of whatever came instead."""
    where = f"GET {resp.request.url.copy_with(query=None)}"
    try:
        err = resp.json().get("error")
        if isinstance(err, dict):
            return (f"{where} answered HTTP {resp.status_code} {err.get('code', '?')}: "
                    f"{err.get('message', '')}")
    except (ValueError, AttributeError):
        pass
    snippet = resp.text[:160].replace("\n", " ")
    return f"{where} answered HTTP {resp.status_code}: {snippet!r}"


@contextmanager
def connect(settings: Settings, link: ProjectLink,
            unreachable: dict[str, str] | None = None) -> Iterator[VercelApi]:
    """A reader for ``link`` at VERCEL_API_URL with VERCEL_TOKEN as its bearer."""
    token = settings.require_vercel_token()
    headers = {"Authorization": f"Bearer {token.reveal()}", "Accept": "application/json"}
    with http.client(settings.vercel_api_url, timeout=settings.http_timeout,
                     headers=headers, unreachable=unreachable) as client:
        yield VercelApi(client, link)
