"""``opsgate rollback rehearse``: the whole procedure on a throwaway sandbox, so a team
can show when it last worked: to blob, an admin edit while on the fallback, the edit
carried back to Neon, back to neon, and the edit found in Neon. Never production: the
target is a sandbox this command starts and tears down.

The rehearsal is recorded as a drill: one record of its own (``rollback.json`` and
``rollback.md`` in a ``*_rollback-rehearse`` folder) and one history line in the
caller's reports folder; the runs inside it keep their records in a temporary folder,
removed after, their summaries copied into the rehearsal's record.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

from opsgate.config import Settings, without_target
from opsgate.errors import OpsgateError, first_line
from opsgate.operation import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Stop, Summary
from opsgate.rollback import deploy, record
from opsgate.rollback.gate import run_gate
from opsgate.rollback.switch import RollbackOptions, run

#: The admin edit made on the fallback (a key of its own, so nothing real is touched).
EDIT_KEY = "opsgate-rehearsal"


def _admin_save(base_url: str, password: str, payload: Any) -> dict[str, Any]:
    with httpx.Client(base_url=base_url, timeout=10) as c:
        c.post("/api/admin/session", json={"password": password}).raise_for_status()
        resp = c.put(f"/api/admin/content/{EDIT_KEY}", json={"payload": payload})
        resp.raise_for_status()
        found: dict[str, Any] = resp.json()
        return found


def _neon_payload(settings: Settings) -> Any:
    with psycopg.connect(settings.require_database_url().reveal()) as conn:
        row = conn.execute("SELECT payload FROM admin_content_state WHERE key = %s",
                           (EDIT_KEY,)).fetchone()
        return row[0] if row else None


def _switch(backend: str, settings: Settings, env_file: Path, work: Path, project: str,
            summary: Summary, say: Callable[[str], None], **kw: Any) -> None:
    # The gate on Neon is a child process: it sees the sandbox's file and none of this
    # environment's target variables (they would win over the file: the caller's
    # DATABASE_URL, production's in a CI job, would be what it checked).
    sandboxed = without_target(os.environ)
    options = RollbackOptions(backend=backend, reason="rehearsal", apply=True,
                              approve_production=project, reports=work,
                              env_file=env_file, pace=deploy.Pace(120.0, 0.1),
                              gate=lambda reports, file: run_gate(reports, file,
                                                                  environ=sandboxed),
                              **kw)
    done = run(options, settings, say)
    inner = done.as_json()
    # Its own record lived in the rehearsal's temporary folder, removed with it: this
    # copy of its summary is what remains, so it names no folder that is gone.
    inner["record_dir"] = inner["history_head"] = None
    summary.details.setdefault("runs", []).append(inner)
    summary.step("apply", f"to-{backend}", "done" if done.status == "done" else "failed",
                 done.message)
    if done.status != "done":
        raise Stop("failed", EXIT_FAILED, f"rehearsal: to-{backend} {done.status}: "
                   f"{done.message}")


def _round_trip(summary: Summary, work: Path, say: Callable[[str], None],
                redactors: list[Callable[[str], str]]) -> None:
    from opsgate.sandbox import Sandbox

    with Sandbox.start() as sb:
        settings = Settings.load(environ=sb.environ())
        redactors.append(settings.redactor())
        project = sb.vercel.project.name if sb.vercel is not None else ""
        summary.details["project"] = {"name": f"sandbox ({project})"}
        _switch("blob", settings, sb.env_file, work, project, summary, say)
        payload = {"rehearsed": summary.started_at}
        saved = _admin_save(sb.environ()["OPS_BASE_URL"], sb.admin_password.reveal(), payload)
        if saved.get("backend") != "blob":
            raise Stop("failed", EXIT_FAILED, f"rehearsal: the edit went to "
                       f"{saved.get('backend')}, not to the fallback")
        summary.step("apply", "admin edit on the fallback", "done",
                     f"{EDIT_KEY} saved, history entry {saved.get('historyId')}")
        _switch("neon", settings, sb.env_file, work, project, summary, say,
                recover_from_blob=True)
        if _neon_payload(settings) != payload:
            raise Stop("failed", EXIT_FAILED, "rehearsal: the edit made on the fallback "
                       "is not in Neon after the return")
        summary.step("verify", "edit carried back", "done", f"{EDIT_KEY} is in Neon")


def rehearse(reports: Path, say: Callable[[str], None]) -> Summary:
    summary = Summary("rollback rehearse", "apply",
                      details={"reason": "rehearsal", "environments": ["sandbox"]})
    # The sandbox's secrets die with it, but are still never written.
    redactors: list[Callable[[str], str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="opsgate-rehearsal-") as tmp:
            _round_trip(summary, Path(tmp), say, redactors)
        summary.finish("done", EXIT_OK, "the rollback procedure worked end to end: to "
                       "blob, an edit on the fallback, recovery to Neon, back to neon")
    except Stop as stop:
        summary.stopped(stop)
    except KeyboardInterrupt:
        summary.finish("interrupted", EXIT_INTERRUPTED, "rehearsal interrupted; the "
                       "sandbox was torn down")
    except (OpsgateError, httpx.HTTPError, psycopg.Error) as exc:
        summary.finish("failed", EXIT_FAILED, f"rehearsal: {first_line(exc)[:300]}")
    redact = redactors[0] if redactors else (lambda s: s)
    folder, head = record.write(summary.as_json(), reports, redact)
    summary.details["record_dir"], summary.details["history_head"] = str(folder), head
    return summary
