"""Running the rollback command in this process against a sandbox, and putting the
sandbox's Vercel project and blob store back as they were after each test."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from opsgate.config import Settings
from opsgate.operation import Summary
from opsgate.rollback.deploy import Pace
from opsgate.rollback.switch import RollbackOptions, run
from opsgate.sandbox import Sandbox

#: Short redeploys and polls: the sandbox's clock, not Vercel's minutes.
QUEUED_S, BUILDING_S = 0.05, 0.15
PACE = Pace(wait_s=10.0, poll_s=0.03)


@contextmanager
def restored(sb: Sandbox, blobs_too: bool = True) -> Iterator[None]:
    """The Vercel project (variables, deployments, snapshots) and the blob objects as
    they are now, back after the block; faults cleared; the request log starts empty.
    ``blobs_too=False``: the blob objects stay as the block left them (a test that
    carried them to Neon too leaves both in agreement)."""
    if sb.vercel is None:
        raise RuntimeError("the sandbox has no Vercel API")
    deploys = sb.vercel.deploys
    deploys.queued_s, deploys.building_s = QUEUED_S, BUILDING_S
    saved = copy.deepcopy((sb.vercel.project.envs, sb.vercel.project.deployments,
                           deploys.snapshots))
    blobs = dict(sb.bucket._blobs)
    deploys.requests.clear()
    try:
        yield
    finally:
        sb.faults.clear()
        sb.vercel.project.envs, sb.vercel.project.deployments, deploys.snapshots = saved
        deploys._pending.clear()
        if blobs_too:
            sb.bucket._blobs.clear()
            sb.bucket._blobs.update(blobs)


def rollback(sb: Sandbox, tmp: Path, backend: str = "blob", *, approve: bool = True,
             **kw: Any) -> Summary:
    settings = Settings.load(environ=sb.environ())
    kw.setdefault("pace", PACE)
    kw.setdefault("approve_production", "constellation" if approve else None)
    options = RollbackOptions(backend=backend, reason=kw.pop("reason", "self-test"),
                              reports=tmp / "reports", env_file=sb.env_file, **kw)
    said: list[str] = []
    summary = run(options, settings, said.append)
    summary.details["said"] = said
    return summary


def writes(sb: Sandbox) -> list[tuple[str, str]]:
    """The requests to the sandbox's Vercel API that were not reads."""
    if sb.vercel is None:
        raise RuntimeError("the sandbox has no Vercel API")
    return [r for r in sb.vercel.deploys.requests if r[0] != "GET"]


def app_overview(sb: Sandbox) -> dict[str, Any]:
    if sb.api is None:
        raise RuntimeError("the sandbox has no app")
    with httpx.Client(base_url=sb.api.url) as c:
        c.post("/api/admin/session", json={"password": sb.admin_password.reveal()})
        found: dict[str, Any] = c.get("/api/admin/overview").json()
        return found


def admin_save(sb: Sandbox, key: str, payload: Any) -> dict[str, Any]:
    if sb.api is None:
        raise RuntimeError("the sandbox has no app")
    with httpx.Client(base_url=sb.api.url) as c:
        c.post("/api/admin/session", json={"password": sb.admin_password.reveal()})
        found: dict[str, Any] = c.put(f"/api/admin/content/{key}",
                                      json={"payload": payload}).json()
        return found
