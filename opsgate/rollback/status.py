"""``opsgate rollback status``: where each environment stands, and what ``to-blob`` and
``to-neon`` would do now, from one read-only `Observation`. A rollback stopped half-way
shows here as such: the variable says one backend while the app serves the other, a
redeploy is under way or ended in ERROR.
"""

from __future__ import annotations

from typing import Any

from opsgate.rollback.deploy import MARK, serving_has
from opsgate.rollback.observe import UNDER_WAY, EnvView, Observation


def _half_way(view: EnvView) -> str | None:
    newer = view.newer or {}
    state, mark = newer.get("readyState"), newer.get("meta", {}).get(MARK)
    if mark and state in UNDER_WAY:
        return f"a redeploy to {mark} ({newer['id']}) is {state}"
    if mark and state in ("ERROR", "CANCELED"):
        return (f"the redeploy to {mark} ({newer['id']}) ended in {state}; "
                f"{(view.serving or {}).get('id')} is still serving")
    if mark and state == "READY" and view.environment == "production":
        return f"the redeploy to {mark} ({newer['id']}) is READY but not serving"
    if (view.environment == "production" and view.app_backend and view.env_backend
            and view.app_backend != view.env_backend):
        return (f"the variable says {view.env_backend} but the app serves "
                f"{view.app_backend}: not redeployed since the change")
    return None


def would(view: EnvView, backend: str) -> list[str]:
    """The steps a switch of this environment to ``backend`` would take now."""
    steps = []
    if view.env_backend != backend:
        steps.append(f"set ADMIN_STORAGE_BACKEND {view.env_backend} -> {backend}")
    newer = view.newer or {}
    if view.env_backend == backend and serving_has(view, backend):
        return steps or ["nothing: already serving " + backend]
    if newer.get("meta", {}).get(MARK) == backend and newer.get("readyState") in UNDER_WAY:
        steps.append(f"wait for the redeploy {newer['id']} (under way)")
    else:
        steps.append(f"redeploy {(view.serving or {}).get('id')} and wait for READY")
    if view.environment == "production":
        steps.append(f"confirm the aliases moved and the app reports {backend}")
    return steps


def status(obs: Observation) -> dict[str, Any]:
    fb = obs.fallback
    doc: dict[str, Any] = {"project": obs.project, "fallback": {
        "usable": fb.usable, "problem": fb.problem, "current": fb.current,
        "blob_sha256": fb.blob_hash, "neon_sha256": fb.neon_hash,
        "differences": fb.differences}, "environments": {}}
    for name, view in obs.envs.items():
        doc["environments"][name] = {
            "variable": view.env_backend, "serving": (view.serving or {}).get("id"),
            "app_reports": view.app_backend, "newer_deployment": view.newer,
            "half_way": _half_way(view), "problems": view.problems,
            "to_blob_would": would(view, "blob"), "to_neon_would": would(view, "neon")}
    doc["to_blob"] = ("ready" if fb.current else
                      "refused unless --accept-fallback-as-is (the fallback is not current)"
                      if fb.usable else f"refused: {fb.problem}")
    doc["to_neon"] = ("ready once the gate on Neon is green" if fb.current else
                      "refused unless --recover-from-blob (blob and Neon differ)"
                      if fb.usable else f"refused: {fb.problem}")
    return doc


def lines(doc: dict[str, Any]) -> list[str]:
    fb = doc["fallback"]
    out = [f"project {doc['project']['name']} ({doc['project']['id']}), production domain "
           f"{doc['project']['domain']}",
           "fallback: " + ("current (blob = Neon, canon-v1 " + str(fb["blob_sha256"])[:12] + "…)"
                           if fb["current"] else fb["problem"] or "differs from Neon: "
                           + "; ".join(fb["differences"][:3]))]
    for name, env in doc["environments"].items():
        out.append(f"{name}: variable {env['variable']}, serving {env['serving']}"
                   + (f", app reports {env['app_reports']}" if env["app_reports"] else ""))
        if env["half_way"]:
            out.append(f"  HALF-WAY: {env['half_way']}")
        out += [f"  problem: {p}" for p in env["problems"]]
        out.append("  to-blob would: " + "; ".join(env["to_blob_would"]))
        out.append("  to-neon would: " + "; ".join(env["to_neon_would"]))
    out += [f"to-blob: {doc['to_blob']}", f"to-neon: {doc['to_neon']}"]
    return out
