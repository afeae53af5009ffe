"""The sandbox's Vercel API answers in Vercel's own shapes: the official @vercel/sdk (a
pinned version from the npm registry), whose schemas are generated from Vercel's
published API description, reads the project, its variables (and one decrypted), every
page of the production deployments and one deployment in full, each answer validated.

The SDK's schemas are lenient where they can be: a required string or number that is
missing reads as "" or 0, an unknown enum value passes. Such a field would pass the SDK
and still be a shape Vercel never sends, so the probe counts what the SDK had to make up
or let through (its own counters) and a call passes only when that count is 0."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsgate.sandbox.reference_app import Faults
from opsgate.sandbox.vercel_api import SandboxVercel
from opsgate.sensitive import Secret
from tests.node_packages import VERCEL_SDK, link_into
from tests.vercel_helpers import served_vercel_api

pytestmark = pytest.mark.npm(VERCEL_SDK)  # pinned: see tests/node_packages.py

#: What both probes share: the SDK's counters of values it filled in or did not know, and
#: ``call``, which records each call's error (Zod's issues flattened) and those counts.
CALLS = r"""
import { startCountingUnrecognized } from '@vercel/sdk/types/unrecognized.js';
import { startCountingDefaultToZeroValue } from '@vercel/sdk/types/defaultToZeroValue.js';

// Zod's issues, flattened: of a union's branches, the one that came closest.
function issues(list) {
  const out = [];
  for (const i of list) {
    if (i.code === 'invalid_union' && i.unionErrors?.length) {
      out.push(...i.unionErrors.map((e) => issues(e.issues))
        .sort((a, b) => a.length - b.length)[0]);
    } else out.push(`${i.path.join('.')}: ${i.message}`);
  }
  return out;
}

const calls = [];
async function call(name, fn) {
  const unrecognized = startCountingUnrecognized();
  const zeroed = startCountingDefaultToZeroValue();
  let result; let error;
  try {
    const answer = await fn();
    if (!answer.ok) throw answer.error;
    result = answer.value;
  } catch (e) {
    error = `${e.name}: ${e.message}`;
    if (e.cause?.issues) error += ': ' + issues(e.cause.issues).slice(0, 20).join('; ');
  }
  const lenient = unrecognized.end() + zeroed.end();
  calls.push({ name, error: error?.slice(0, 1500) ?? null, lenient });
  return result;
}
"""

PROBE = r"""
// The SDK's standalone functions, not its Vercel class: importing the class loads every
// endpoint's schemas (about 10 s of Node's time here), these load what they use.
import { VercelCore } from '@vercel/sdk/core.js';
import { projectsGetProject } from '@vercel/sdk/funcs/projectsGetProject.js';
import { projectsFilterProjectEnvs } from '@vercel/sdk/funcs/projectsFilterProjectEnvs.js';
import { projectsGetProjectEnv } from '@vercel/sdk/funcs/projectsGetProjectEnv.js';
import { deploymentsGetDeployments } from '@vercel/sdk/funcs/deploymentsGetDeployments.js';
import { deploymentsGetDeployment } from '@vercel/sdk/funcs/deploymentsGetDeployment.js';

const [serverURL, projectId, teamId, limit] = process.argv.slice(2);
const sdk = new VercelCore({ bearerToken: process.env.VERCEL_TOKEN, serverURL,
                             retryConfig: { strategy: 'none' } });

const project = await call('getProject',
  () => projectsGetProject(sdk, { idOrName: projectId, teamId }));
const envs = await call('filterProjectEnvs',
  () => projectsFilterProjectEnvs(sdk, { idOrName: projectId, teamId, decrypt: 'false' }));
const encrypted = (envs?.envs ?? []).find((e) => e.type === 'encrypted');
const env = encrypted && await call('getProjectEnv',
  () => projectsGetProjectEnv(sdk, { idOrName: projectId, id: encrypted.id, teamId }));
const pages = []; let until;
do {
  const query = { projectId, teamId, target: 'production', limit: Number(limit) };
  if (until !== undefined) query.until = until;
  const page = await call('getDeployments', () => deploymentsGetDeployments(sdk, query));
  if (!page) break;
  pages.push({ uids: page.deployments.map((d) => d.uid), pagination: page.pagination });
  until = page.pagination.next ?? undefined;
} while (until !== undefined && pages.length < 20);
const newest = pages[0]?.uids[0];
const deployment = newest && await call('getDeployment',
  () => deploymentsGetDeployment(sdk, { idOrUrl: newest, teamId }));
console.log(JSON.stringify({
  calls, project: project && { id: project.id, accountId: project.accountId },
  envs: envs?.envs?.map((e) => e.key), envPagination: envs?.pagination ?? null,
  decrypted: env?.decrypted ?? null, pages,
  deployment: deployment && { id: deployment.id, readyState: deployment.readyState,
                              alias: deployment.alias, hasBuild: 'build' in deployment },
}));
"""


@pytest.fixture(scope="module")
def sdk_dir(tmp_path_factory: pytest.TempPathFactory, node_packages: Path) -> Path:
    folder = tmp_path_factory.mktemp("vercel-sdk")
    (folder / "package.json").write_text(
        '{"name": "vercel-sdk-probe", "private": true, "type": "module"}')
    link_into(folder, node_packages)  # the run's one install (tests/node_packages.py)
    (folder / "probe.mjs").write_text(CALLS + PROBE)
    return folder


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[SandboxVercel, Faults, str]]:
    with served_vercel_api("sbx_vercel_sdk-probe") as served:
        yield served


def probe(sdk_dir: Path, state: SandboxVercel, url: str, limit: int) -> dict[str, Any]:
    env = {**os.environ, "VERCEL_TOKEN": state.token.reveal()}
    proc = subprocess.run(["node", "probe.mjs", url, state.project.id, state.team_id,
                           str(limit)], cwd=sdk_dir, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def production_uids(state: SandboxVercel, faults: Faults) -> list[str]:
    seen = state.view(state.project.id, faults)
    assert seen is not None
    return [d["id"] for d in seen.deployments if d["target"] == "production"]


@pytest.mark.parametrize("fault", [None, "vercel-deploy-error", "vercel-deploy-building",
                                   "vercel-backend-sensitive"])
def test_the_official_sdk_validates_every_answer(
        sdk_dir: Path, api: tuple[SandboxVercel, Faults, str], fault: str | None) -> None:
    state, faults, url = api
    faults.set(*([fault] if fault else []))
    try:
        out = probe(sdk_dir, state, url, limit=2)
        expected = production_uids(state, faults)
    finally:
        faults.clear()
    refused = [c for c in out["calls"] if c["error"] or c["lenient"]]
    assert not refused, json.dumps(refused, indent=1)
    assert [c["name"] for c in out["calls"]] == [
        "getProject", "filterProjectEnvs", "getProjectEnv",
        *["getDeployments"] * len(out["pages"]), "getDeployment"]
    assert out["project"] == {"id": state.project.id, "accountId": state.team_id}
    assert len(out["envs"]) == len(state.project.envs)
    assert out["envPagination"] == {"count": len(state.project.envs), "next": None,
                                    "prev": None}
    assert out["decrypted"] is True
    # Every production deployment once, newest first, two a page, the cursor honoured.
    pages = out["pages"]
    assert len(pages) >= 3 and all(len(p["uids"]) <= 2 for p in pages)
    assert [u for p in pages for u in p["uids"]] == expected
    assert pages[0]["pagination"]["prev"] is None and pages[-1]["pagination"]["next"] is None
    # getDeployment parsed as a full deployment, not as the union's bare branch.
    shown = out["deployment"]
    assert shown["id"] == expected[0] and shown["hasBuild"] is True
    if fault is None:
        assert shown["readyState"] == "READY" and "127.0.0.1:9" in shown["alias"]
    elif fault != "vercel-backend-sensitive":
        assert shown["readyState"] == ("ERROR" if fault == "vercel-deploy-error"
                                       else "BUILDING")


def test_a_field_the_sdk_fills_in_is_caught(
        sdk_dir: Path, api: tuple[SandboxVercel, Faults, str]) -> None:
    """The oracle's own check: without its required ``value`` a plain variable still
    passes the SDK (read as ""), and the probe's count is what catches it."""
    state, _, url = api
    env = next(e for e in state.project.envs if e["type"] == "plain")
    value = env.pop("value")
    try:
        out = probe(sdk_dir, state, url, limit=2)
    finally:
        env["value"] = value
    (listed,) = [c for c in out["calls"] if c["name"] == "filterProjectEnvs"]
    assert listed["error"] is None and listed["lenient"] >= 1
    assert all(c["error"] is None and c["lenient"] == 0
               for c in out["calls"] if c is not listed)


WRITE_PROBE = r"""
// The rollback's writes, as the SDK sends them and parses the answers: edit one
// variable, redeploy the serving deployment, poll it to READY, read the production
// domain's deployment.
import { VercelCore } from '@vercel/sdk/core.js';
import { projectsEditProjectEnv } from '@vercel/sdk/funcs/projectsEditProjectEnv.js';
import { deploymentsCreateDeployment } from '@vercel/sdk/funcs/deploymentsCreateDeployment.js';
import { deploymentsGetDeployment } from '@vercel/sdk/funcs/deploymentsGetDeployment.js';

const [serverURL, projectId, teamId, envId, serving, domain, name] = process.argv.slice(2);
const sdk = new VercelCore({ bearerToken: process.env.VERCEL_TOKEN, serverURL,
                             retryConfig: { strategy: 'none' } });
const edited = await call('editProjectEnv', () => projectsEditProjectEnv(sdk, {
  idOrName: projectId, id: envId, teamId, requestBody: { value: 'blob' } }));
const made = await call('createDeployment', () => deploymentsCreateDeployment(sdk, {
  teamId, forceNew: '1',
  requestBody: { name, deploymentId: serving, target: 'production',
                 meta: { opsgateRollback: 'blob' } } }));
const states = [];
for (let i = 0; made && i < 100; i++) {
  const d = await call('getDeployment', () => deploymentsGetDeployment(sdk,
    { idOrUrl: made.id, teamId }));
  if (!d) break;
  if (states.at(-1) !== d.readyState) states.push(d.readyState);
  if (d.readyState === 'READY' || d.readyState === 'ERROR') break;
  await new Promise((r) => setTimeout(r, 50));
}
const live = await call('getDeployment', () => deploymentsGetDeployment(sdk,
  { idOrUrl: domain, teamId }));
console.log(JSON.stringify({ calls, edited: edited && { id: edited.id, key: edited.key },
  made: made && { id: made.id, readyState: made.readyState, meta: made.meta },
  states, live: live && { id: live.id, alias: live.alias } }));
"""


def test_the_official_sdk_validates_the_rollbacks_writes(sdk_dir: Path) -> None:
    state = SandboxVercel(Secret("sbx_vercel_sdk-probe"), "127.0.0.1:9")
    state.deploys.queued_s, state.deploys.building_s = 0.1, 0.2
    env = next(e for e in state.project.envs if e["key"] == "ADMIN_STORAGE_BACKEND"
               and e["target"] == ["production"])
    serving = state.deploys.serving()["id"]
    (sdk_dir / "write-probe.mjs").write_text(CALLS + WRITE_PROBE)
    with served_vercel_api("", state) as (_, _, url):
        proc = subprocess.run(
            ["node", "write-probe.mjs", url, state.project.id, state.team_id,
             env["id"], serving, "127.0.0.1:9", state.project.name], cwd=sdk_dir,
            env={**os.environ, "VERCEL_TOKEN": state.token.reveal()}, capture_output=True,
            text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    refused = [c for c in out["calls"] if c["error"] or c["lenient"]]
    assert not refused, json.dumps(refused, indent=1)
    assert out["edited"] == {"id": env["id"], "key": "ADMIN_STORAGE_BACKEND"}
    assert out["made"]["readyState"] == "QUEUED"
    assert out["made"]["meta"] == {"opsgateRollback": "blob"}
    assert out["states"][-1] == "READY" and "BUILDING" in out["states"]
    assert out["live"]["id"] == out["made"]["id"] and "127.0.0.1:9" in out["live"]["alias"]
    assert state.deploys.serving_backend() == "blob"
