"""One environment's switch, step by step: the variable, the redeploy, the wait for
READY, the aliases, the app. Each step first looks at what is already so (a fresh
`EnvView`), so a re-run skips what is done and a run stopped half-way carries on: an
edited variable is not edited again, a redeploy under way (marked with `MARK` in its
``meta``) is waited for rather than repeated.

Vercel applies variables only to new deployments, so the variable alone proves
nothing: a switch is done when the deployment serving the environment was built after
the variable said so, and (production) the app itself reports the backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opsgate.clients.vercel import VercelApi
from opsgate.config import Settings
from opsgate.operation import EXIT_FAILED, Stop, Summary
from opsgate.rollback.observe import BACKEND, UNDER_WAY, EnvView, read_app

#: The ``meta`` key of opsgate's redeploys; its value is the backend switched to.
MARK = "opsgateRollback"


@dataclass
class Pace:
    """How long to wait for READY, and how often to look (tests shorten both)."""

    wait_s: float = 600.0
    poll_s: float = 5.0


def set_variable(api: VercelApi, view: EnvView, backend: str, apply: bool,
                 summary: Summary) -> None:
    name = f"{view.environment}: {BACKEND}={backend}"
    if view.env_id is None:
        raise Stop("precondition-failed", EXIT_FAILED, "; ".join(view.problems)
                   or f"{BACKEND} is not readable for {view.environment}")
    if view.env_backend == backend:
        summary.step("apply", name, "skipped", f"already {backend} in Vercel")
    elif not apply:
        summary.step("apply", name, "planned", f"would change {view.env_backend} -> {backend}")
    else:
        api.edit_env(view.env_id, BACKEND, backend)
        summary.step("apply", name, "done", f"changed {view.env_backend} -> {backend}")


def serving_has(view: EnvView, backend: str) -> bool:
    """Whether the serving deployment already runs with ``backend``: production by the
    app's own word; a preview by having been built after the variable said so."""
    if view.environment == "production":
        return view.app_backend == backend
    serving = view.serving or {}
    return (view.env_backend == backend and view.env_updated_at is not None
            and int(serving.get("createdAt") or 0) >= view.env_updated_at)


def start_redeploy(api: VercelApi, view: EnvView, project: dict[str, str], backend: str,
                   apply: bool, summary: Summary) -> str | None:
    """The id of the redeploy to wait for (a new one, or one an earlier run started
    that is still on its way), or None when nothing needs deploying (or a dry run)."""
    env = view.environment
    serving = view.serving or {}
    if view.env_backend == backend and serving_has(view, backend):
        summary.step("apply", f"{env}: redeploy", "skipped",
                     f"{serving.get('id')} already serves {backend}")
        return None
    newer = view.newer or {}
    if (newer.get("meta", {}).get(MARK) == backend
            and newer.get("readyState") in (*UNDER_WAY, "READY")):
        if not apply:
            summary.step("apply", f"{env}: redeploy", "planned",
                         f"would wait for {newer['id']} (started by an earlier run, "
                         f"{newer['readyState']})")
            return None
        summary.step("apply", f"{env}: redeploy", "skipped",
                     f"{newer['id']} (started by an earlier run) is {newer['readyState']}: "
                     "resuming")
        return str(newer["id"])
    if not apply:
        summary.step("apply", f"{env}: redeploy", "planned",
                     f"would redeploy {serving.get('id')} with {BACKEND}={backend}")
        return None
    target = "production" if env == "production" else None
    made = api.redeploy(str(serving["id"]), project["name"], target, {MARK: backend})
    summary.step("apply", f"{env}: redeploy", "done",
                 f"{made.get('id')} created from {serving.get('id')}")
    return str(made["id"])


def wait_ready(api: VercelApi, ident: str, view: EnvView, pace: Pace, summary: Summary,
               say: Callable[[str], None]) -> dict[str, Any]:
    """Polls the deployment until READY, bounded by ``pace.wait_s``; ERROR (or
    CANCELED) stops the run saying the previous deployment still serves."""
    env, old = view.environment, (view.serving or {}).get("id")
    deadline, last = time.monotonic() + pace.wait_s, None
    while True:
        found = api.deployment(ident)
        state = str(found.get("readyState"))
        if state != last:
            say(f"{env}: deployment {ident} is {state}")
            last = state
        if state == "READY":
            summary.step("verify", f"{env}: READY", "done", f"{ident} is READY")
            return found
        if state not in UNDER_WAY:
            why = f" ({found.get('errorCode')}: {found.get('errorMessage')})" \
                if found.get("errorCode") else ""
            summary.step("verify", f"{env}: READY", "failed", f"{ident} ended {state}")
            raise Stop("failed", EXIT_FAILED,
                       f"{env}: the redeploy {ident} ended in {state}{why}; the previous "
                       f"deployment {old} is still serving; fix the build and re-run")
        if time.monotonic() >= deadline:
            summary.step("verify", f"{env}: READY", "failed", f"{ident} still {state}")
            raise Stop("failed", EXIT_FAILED,
                       f"{env}: the redeploy {ident} is still {state} after "
                       f"{pace.wait_s:g} s; the previous deployment {old} is still serving; "
                       "re-run to keep waiting (the redeploy is resumed, not repeated)")
        time.sleep(pace.poll_s)


def confirm_serving(api: VercelApi, settings: Settings, view: EnvView, ident: str,
                    domain: str, backend: str, expected: dict[str, int],
                    summary: Summary) -> None:
    """Production: the production domain now points at ``ident``, and the app reports
    ``backend`` with the admin counts of the state it should serve."""
    serving = api.deployment(domain)
    if serving.get("id") != ident:
        summary.step("verify", "production: aliases", "failed", f"{domain} -> {serving.get('id')}")
        raise Stop("failed", EXIT_FAILED,
                   f"production: {ident} is READY but {domain} still points at "
                   f"{serving.get('id')} (the aliases did not move); promote {ident} "
                   "and re-run")
    summary.step("verify", "production: aliases", "done", f"{domain} -> {ident}")
    confirm_app(settings, view, backend, expected, summary)


def confirm_app(settings: Settings, view: EnvView, backend: str, expected: dict[str, int],
                summary: Summary) -> None:
    view.app_backend, view.problems = None, []
    read_app(settings, view)
    if view.app_backend != backend:
        summary.step("verify", "production: app backend", "failed",
                     f"reports {view.app_backend}")
        why = "; ".join(view.problems) or f"it reports {view.app_backend}"
        raise Stop("failed", EXIT_FAILED,
                   f"production: the app does not serve from {backend} after the redeploy "
                   f"({why}); the deployment was built with another {BACKEND}")
    counts = view.app_counts or {}
    off = [f"{k} {counts.get(k)} (expected {v})" for k, v in expected.items()
           if counts.get(k) != v]
    if off:
        summary.step("verify", "production: app state", "failed", "; ".join(off))
        raise Stop("failed", EXIT_FAILED, f"production: the app reports {backend} but not "
                   f"its state: {'; '.join(off)}")
    summary.step("verify", "production: app backend", "done",
                 f"reports {backend} with {expected}")


def switch(api: VercelApi, settings: Settings, view: EnvView, project: dict[str, str],
           backend: str, expected: dict[str, int], apply: bool, pace: Pace,
           summary: Summary, say: Callable[[str], None]) -> None:
    """One environment, from wherever it stands, to serving ``backend``."""
    set_variable(api, view, backend, apply, summary)
    if apply and view.env_backend != backend:
        view.env_backend, view.env_updated_at = backend, int(time.time() * 1000)
    ident = start_redeploy(api, view, project, backend, apply, summary)
    if ident is None:
        if apply and view.environment == "production":
            confirm_app(settings, view, backend, expected, summary)
        return
    wait_ready(api, ident, view, pace, summary, say)
    if view.environment == "production":
        confirm_serving(api, settings, view, ident, project["domain"], backend, expected,
                        summary)
