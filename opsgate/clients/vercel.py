"""The Vercel REST API, as far as the deployment check reads it (the project, its
environment variables by target, its production deployments) and the rollback command
writes it (a variable's value, a redeploy).

Endpoints are the versions Vercel's official SDK (``@vercel/sdk``) calls, and fields are
read as its published schemas name them: ``GET /v9/projects/{idOrName}``,
``GET /v10/projects/{idOrName}/env``, ``GET /v1/projects/{idOrName}/env/{id}`` (one
decrypted value), ``GET /v7/deployments?projectId=&target=production`` (``uid``,
``readyState``), ``GET /v13/deployments/{idOrUrl}``; for the rollback command, the writes
``PATCH /v9/projects/{idOrName}/env/{id}`` and ``POST /v13/deployments`` (a redeploy);
``Authorization: Bearer <token>``,
``teamId`` on every request of a team's project, errors as
``{"error": {"code", "message"}}``.

Lists are read to their end: Vercel pages them, and a variable on the second page is as
set as one on the first. Each answer's ``pagination.next`` is passed back as ``until``
until it is null (bounded: a cursor that does not move, or more than `MAX_PAGES` pages,
is an error). A busy API (429) or a failing one (5xx) is retried within a bounded budget,
honouring ``Retry-After``; every retry is logged in one line (logger ``opsgate.vercel``)
and the final failure says how many attempts it took.

The token lives in the client's headers only: never in a URL, a message or a repr.
Values of ``encrypted`` and ``sensitive`` variables are secrets: a decrypted value comes
back as a `Secret` and is only ever compared.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from opsgate.clients import web as http
from opsgate.config import Settings
from opsgate.errors import ConfigError, HttpCheckError, MissingEnvError, VercelApiError
from opsgate.sensitive import Secret

#: Variable types whose values are secrets (Vercel's ``type``); ``plain`` is not.
SECRET_TYPES = frozenset({"encrypted", "sensitive", "secret"})

#: Tries of one request while the API answers 429 or 5xx: the first and two retries.
ATTEMPTS = 3
#: The most opsgate waits in all for one request's retries. A ``Retry-After`` beyond
#: what is left fails at once, saying so: a gate waits seconds, not a rate window.
RETRY_BUDGET_S = 10.0
#: Items asked for per page of a list (Vercel caps the deployment list at 100).
PAGE_LIMIT = 100
#: Pages followed in one list before opsgate calls the cursor broken.
MAX_PAGES = 100

log = logging.getLogger("opsgate.vercel")


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

    def __init__(self, client: httpx.Client, link: ProjectLink,
                 page_limit: int = PAGE_LIMIT) -> None:
        self.client = client
        self.link = link
        self.page_limit = page_limit
        #: Pages of lists read so far (a self-test proves the pages were followed).
        self.pages = 0

    def get(self, path: str, what: str, **params: str) -> Any:
        """The JSON answer of ``GET path``. A 429 or 5xx is the API's state, not an answer
        about the project: retried (within `ATTEMPTS` and `RETRY_BUDGET_S`) before it
        becomes the check's failure; any other error status fails at once."""
        return self.send("GET", path, what, None, **params)

    def send(self, method: str, path: str, what: str, body: dict[str, Any] | None,
             **params: str) -> Any:
        """The JSON answer of ``method path``. A write is retried on 429 only: the API
        refused it before acting, while after a 5xx it may have acted (a second redeploy
        is not what the operator asked for)."""
        query = dict(params)
        if self.link.team_id:
            query["teamId"] = self.link.team_id
        waited = 0.0
        extra = {} if body is None else {"json": body}
        for attempt in range(1, ATTEMPTS + 1):
            resp = http.request(self.client, method, path, what=what, params=query, **extra)
            if resp.status_code != 429 and (resp.status_code < 500 or method != "GET"):
                break
            line = f"{what}: {_error_line(resp)}"
            if attempt == ATTEMPTS:
                raise VercelApiError(f"{line}; gave up after {ATTEMPTS} attempts")
            pause = _retry_after(resp)
            if pause is None:
                pause = http.BACKOFF_S * attempt
            elif pause > RETRY_BUDGET_S - waited:
                raise VercelApiError(f"{line}; Retry-After {pause:g} s is beyond the "
                                     f"{RETRY_BUDGET_S - waited:g} s left of the retry "
                                     f"budget ({RETRY_BUDGET_S:g} s), so not retried")
            log.warning("%s; retry %d of %d in %.1f s", line, attempt, ATTEMPTS - 1, pause)
            time.sleep(pause)
            waited += pause
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

    def paged(self, path: str, what: str, key: str, **params: str) -> Iterator[dict[str, Any]]:
        """The items under ``key`` of every page, lazily: a caller that needs the first
        item reads one page. Each page's ``pagination.next`` goes back as ``until``."""
        until: int | None = None
        for _ in range(MAX_PAGES):
            query = dict(params) if until is None else {**params, "until": str(until)}
            found = self.get(path, what, **query)
            self.pages += 1
            if not isinstance(found, dict):
                raise VercelApiError(f"{what}: the answer is not a JSON object")
            items = found.get(key)
            if not isinstance(items, list):
                raise VercelApiError(f"{what}: the answer has no '{key}' list")
            yield from (i for i in items if isinstance(i, dict))
            pagination = found.get("pagination")
            following = pagination.get("next") if isinstance(pagination, dict) else None
            if following is None:
                return
            if (not isinstance(following, int) or isinstance(following, bool)
                    or (until is not None and following >= until)):
                raise VercelApiError(f"{what}: pagination.next {following!r} does not lead "
                                     f"past the page before (until={until}); stopped")
            until = following
        raise VercelApiError(f"{what}: more than {MAX_PAGES} pages; stopped")

    def project(self) -> dict[str, Any]:
        found = self.get(f"/v9/projects/{self.link.project_id}",
                         f"Vercel project {self.link.project_id}")
        return _object(found, "project")

    def envs(self) -> list[dict[str, Any]]:
        """Every variable of the project, all pages."""
        return list(self.paged(f"/v10/projects/{self.link.project_id}/env",
                               "Vercel environment variables", "envs", decrypt="false"))

    def decrypted(self, env_id: str, key: str) -> Secret:
        """One variable's decrypted value (for an ``encrypted`` one), as a Secret."""
        found = _object(self.get(f"/v1/projects/{self.link.project_id}/env/{env_id}",
                                 f"Vercel variable {key} (decrypted)"), "env")
        value = found.get("value")
        if not isinstance(value, str) or found.get("decrypted") is False:
            raise VercelApiError(f"Vercel variable {key}: the API gave no decrypted value")
        return Secret(value)

    def deployments(self, target: str = "production", limit: int | None = None
                    ) -> Iterator[dict[str, Any]]:
        """The project's deployments to ``target``, newest first, as the list shows them
        (``uid``, ``readyState``, ``createdAt``), following the pages."""
        return self.paged("/v7/deployments", f"Vercel {target} deployments", "deployments",
                          projectId=self.link.project_id, target=target,
                          limit=str(limit or self.page_limit))

    def latest_production_deployment(self) -> dict[str, Any] | None:
        return next(self.deployments("production", limit=1), None)

    def deployment(self, id_or_url: str) -> dict[str, Any]:
        """One deployment in full, by id, URL or an alias it holds (so a production
        domain names the deployment serving it)."""
        return _object(self.get(f"/v13/deployments/{id_or_url}",
                                f"Vercel deployment {id_or_url}"), "deployment")

    # -- writes (the rollback command) ----------------------------------------------

    def edit_env(self, env_id: str, key: str, value: str) -> dict[str, Any]:
        """Sets one variable's value (``PATCH /v9/projects/{idOrName}/env/{id}``, the
        SDK's ``projects.editProjectEnv``). Only new deployments see it."""
        return _object(self.send("PATCH", f"/v9/projects/{self.link.project_id}/env/{env_id}",
                                 f"Vercel variable {key} (edit)", {"value": value}), "env")

    def redeploy(self, deployment_id: str, name: str, target: str | None,
                 meta: dict[str, str]) -> dict[str, Any]:
        """A new deployment of ``deployment_id``'s source with the project's current
        variables (``POST /v13/deployments`` with ``deploymentId``, the SDK's
        ``deployments.createDeployment``); ``target`` ``production`` for production, None
        for a preview. ``meta`` marks it, so a resumed run finds its own redeploy."""
        body: dict[str, Any] = {"name": name, "deploymentId": deployment_id, "meta": meta}
        if target is not None:
            body["target"] = target
        return _object(self.send("POST", "/v13/deployments",
                                 f"Vercel redeploy of {deployment_id}", body, forceNew="1"),
                       "deployment")


def _retry_after(resp: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds, or an HTTP date), or None when absent
    or unreadable."""
    given = resp.headers.get("retry-after", "").strip()
    if given.isdigit():
        return float(given)
    try:
        return max(0.0, parsedate_to_datetime(given).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _object(found: Any, what: str) -> dict[str, Any]:
    if not isinstance(found, dict):
        raise VercelApiError(f"Vercel {what}: the answer is not a JSON object")
    return found


def _error_line(resp: httpx.Response) -> str:
    """``GET /v9/projects/x answered HTTP 404 not_found: Project not found``, from
    Vercel's error shape, or the first bytes of whatever came instead."""
    where = f"{resp.request.method} {resp.request.url.copy_with(query=None)}"
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
