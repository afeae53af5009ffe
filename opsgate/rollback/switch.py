"""``to-blob`` and ``to-neon`` on the operation skeleton: preconditions (the linked
project, production's approval, the fallback's state, for to-neon the recovery and the
gate), then each environment's switch (`opsgate.rollback.deploy`), then the record.

Dry run by default: everything is read and every decision made, nothing is written to
Vercel, Neon or the blob store (the record of the dry run is written, as for every run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from opsgate import resources
from opsgate.clients import vercel
from opsgate.clients.vercel import ProjectLink, VercelApi
from opsgate.config import Settings
from opsgate.errors import ConfigError, OpsgateError, first_line
from opsgate.migrate.runner import run_migration
from opsgate.migrate.scripts import find_script
from opsgate.operation import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Stop, Summary
from opsgate.rollback import deploy, record
from opsgate.rollback.gate import run_gate
from opsgate.rollback.observe import Fallback, Observation, observe, read_fallback

#: The migration that carries the fallback's state (edits made on it) back to Neon.
RECOVERY = "20260211_1002_blob_to_neon_admin_state"


@dataclass
class RollbackOptions:
    backend: str  # "blob" or "neon"
    reason: str
    apply: bool = False
    environments: tuple[str, ...] = ("production",)
    accept_fallback_as_is: bool = False
    recover_from_blob: bool = False
    #: The Vercel project's name, repeated to approve acting on production.
    approve_production: str | None = None
    write_audit: bool = False
    reports: Path = Path("reports")
    env_file: Path | None = None
    pace: deploy.Pace = field(default_factory=deploy.Pace)
    #: to-neon: run the gate's checks on Neon (a rehearsal's tests may stub it).
    gate: Callable[[Path, Path | None], tuple[bool, str]] = run_gate


def recovery_command(reason: str) -> str:
    return f'opsgate migrate run {RECOVERY} --apply --force --reason "{reason}"'


def check_link(link: ProjectLink, obs: Observation, summary: Summary) -> None:
    if link.conflict:
        raise Stop("precondition-failed", EXIT_USAGE,
                   f"{link.source} names project {link.project_id} but the link file names "
                   f"{link.conflict}: which project is meant is unclear")
    if obs.project["id"] != link.project_id:
        raise Stop("precondition-failed", EXIT_FAILED,
                   f"the Vercel API answered for project {obs.project['id']} "
                   f"({obs.project['name']}), not the linked {link.project_id}")
    summary.step("preconditions", "linked project", "done",
                 f"{obs.project['name']} ({link.project_id})")


def check_approval(options: RollbackOptions, obs: Observation, summary: Summary) -> None:
    if "production" not in options.environments or not options.apply:
        return
    name = obs.project["name"]
    if options.approve_production != name:
        given = ("" if options.approve_production is None
                 else f" (--approve-production names {options.approve_production!r})")
        raise Stop("refused", EXIT_USAGE,
                   f"production needs an explicit approval naming its project{given}: pass "
                   f"--approve-production={name}; nothing was changed")
    summary.step("preconditions", "production approved", "done", f"--approve-production={name}")


def fallback_lines(fallback: Fallback) -> list[str]:
    return [f"blob {fallback.blob_hash}", f"neon {fallback.neon_hash}", *fallback.differences]


def check_fallback_for_blob(options: RollbackOptions, fallback: Fallback,
                            summary: Summary, say: Callable[[str], None]) -> None:
    if not fallback.usable:
        raise Stop("precondition-failed", EXIT_FAILED, f"{fallback.problem}; the app cannot "
                   "be switched to it")
    if fallback.current:
        summary.step("preconditions", "fallback current", "done",
                     f"blob and Neon hash {str(fallback.blob_hash)[:12]}… (canon-v1)")
        return
    differences = fallback_lines(fallback)
    if not options.accept_fallback_as_is:
        raise Stop("precondition-failed", EXIT_FAILED,
                   "the blob fallback is not current (its canon-v1 hash differs from "
                   "Neon's): " + "; ".join(differences[2:5]) + "; refresh it, or pass "
                   "--accept-fallback-as-is to serve it as it is (Neon may be the part "
                   "that is wrong)", differences)
    for line in differences:
        say(f"fallback differs: {line}")
    summary.step("preconditions", "fallback accepted as it is", "done",
                 "; ".join(differences)[:500])


def recover_neon(options: RollbackOptions, settings: Settings, fallback: Fallback,
                 summary: Summary, say: Callable[[str], None]) -> Fallback:
    """to-neon: Neon must hold what the fallback holds (the edits made on it) first."""
    if not fallback.usable:
        raise Stop("precondition-failed", EXIT_FAILED, f"{fallback.problem}; nothing to "
                   "carry back from")
    if fallback.current:
        summary.step("preconditions", "fallback carried back", "skipped",
                     f"blob and Neon hash {str(fallback.blob_hash)[:12]}… already")
        return fallback
    if not options.recover_from_blob:
        raise Stop("refused", EXIT_FAILED,
                   "the blob fallback and Neon differ (" + "; ".join(fallback.differences[:3])
                   + "): edits made on the fallback would be lost; carry them back first: "
                   f"{recovery_command(options.reason)}, or re-run with --recover-from-blob",
                   fallback_lines(fallback))
    script = find_script(resources.migrations_dir(), RECOVERY)
    result = run_migration(script, settings, apply=options.apply, force=True,
                           reason=options.reason, verbose=False)
    summary.details["recovery"] = result.summary
    if result.exit_code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt  # the runner rolled back; the run ends as interrupted
    if result.exit_code != EXIT_OK:
        raise Stop("failed", EXIT_FAILED, f"the forced restore failed: {result.message}")
    if not options.apply:
        summary.step("preconditions", "fallback carried back", "planned",
                     f"the runner's dry run of {RECOVERY} --force: {result.message}")
        return fallback
    say(f"recovered: {result.message}")
    summary.step("preconditions", "fallback carried back", "done", result.message)
    after = read_fallback(settings)
    if not after.current:
        raise Stop("failed", EXIT_FAILED, "after the forced restore the fallback and Neon "
                   "still differ: " + "; ".join(after.differences[:3]))
    return after


def check_gate(options: RollbackOptions, summary: Summary) -> None:
    planned = any(s["step"] == "fallback carried back" and s["status"] == "planned"
                  for s in summary.steps)
    if planned:
        summary.step("preconditions", "gate on Neon", "planned",
                     "runs after the forced restore, with --apply")
        return
    with summary.timed("gate"):
        ok, line = options.gate(options.reports, options.env_file)
    summary.step("preconditions", "gate on Neon", "done" if ok else "failed", line)
    if not ok:
        raise Stop("precondition-failed", EXIT_FAILED, f"Neon is not ready to serve: {line}")


def expected_counts(fallback: Fallback, backend: str) -> dict[str, int]:
    counts = fallback.blob_counts if backend == "blob" else fallback.neon_counts
    return {"admin_content_state": counts.get("content_state_keys", -1),
            "admin_history": counts.get("history_entries", -1)}


def _stages(options: RollbackOptions, settings: Settings, link: ProjectLink, api: VercelApi,
            summary: Summary, say: Callable[[str], None]) -> None:
    with summary.timed("preconditions"):
        obs = observe(api, settings, options.environments)
        summary.details["project"] = obs.project
        summary.details["before"] = obs.as_json()
        check_link(link, obs, summary)
        check_approval(options, obs, summary)
        fallback = obs.fallback
        if options.backend == "blob":
            check_fallback_for_blob(options, fallback, summary, say)
        else:
            fallback = recover_neon(options, settings, fallback, summary, say)
            check_gate(options, summary)
    expected = expected_counts(fallback, options.backend)
    with summary.timed("apply"):
        for environment in options.environments:
            deploy.switch(api, settings, obs.envs[environment], obs.project, options.backend,
                          expected, options.apply, options.pace, summary, say)


def _acted(summary: Summary) -> bool:
    """Whether the run wrote something, carried the fallback back, or saw a redeploy to
    READY (one this run started, or one an interrupted run left on its way)."""
    return any(s["status"] == "done" and (
        s["stage"] == "apply" or s["step"] == "fallback carried back"
        or s["step"].endswith(": READY")) for s in summary.steps)


def _outcome(options: RollbackOptions, summary: Summary) -> Summary:
    acted = _acted(summary)
    if not options.apply:
        return summary.finish("planned", EXIT_OK, "dry run: nothing was changed; run again "
                              "with --apply to act")
    if not acted:
        return summary.finish("noop", EXIT_OK, f"already on {options.backend} everywhere "
                              "asked: nothing to do")
    return summary.finish("done", EXIT_OK, f"{', '.join(options.environments)} now serve"
                          f"{'s' if len(options.environments) == 1 else ''} admin state "
                          f"from {options.backend}")


def run(options: RollbackOptions, settings: Settings, say: Callable[[str], None]
        ) -> Summary:
    """One run; never raises for an expected failure: the summary says how it ended."""
    summary = Summary(f"rollback to-{options.backend}", "apply" if options.apply else "dry-run",
                      details={"reason": options.reason,
                               "environments": list(options.environments)})
    redact = settings.redactor()
    try:
        if not options.reason.strip():
            raise Stop("refused", EXIT_USAGE, '--reason "..." must say why')
        link = vercel.resolve_link(settings, Path.cwd())
        with vercel.connect(settings, link) as api:
            _stages(options, settings, link, api, summary, say)
        _outcome(options, summary)
    except Stop as stop:
        summary.stopped(stop)
    except KeyboardInterrupt:
        last = summary.steps[-1]["step"] if summary.steps else "the preconditions"
        summary.finish("interrupted", EXIT_INTERRUPTED,
                       f"interrupted after {last}; what was done stays done: re-run the same "
                       "command to resume (`opsgate rollback status` shows where it stands)")
    except OpsgateError as exc:
        code = EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
        summary.finish("failed", code, redact(first_line(exc))[:300])
    return finish_record(options, settings, summary)


def finish_record(options: RollbackOptions, settings: Settings, summary: Summary) -> Summary:
    """The record of the run, unless it was a usage error before any step (a missing
    variable, a bad project link): nothing was looked at, so there is nothing to record."""
    redact = settings.redactor()
    if summary.exit_code == EXIT_USAGE and not summary.steps:
        summary.details["record_dir"] = None
        return summary
    try:
        folder, head = record.write(summary.as_json(), options.reports, redact)
    except OSError as exc:  # an unwritable reports folder: said, and the run fails
        summary.details["record_dir"] = None
        return summary.finish(summary.status, summary.exit_code or EXIT_FAILED,
                              f"{summary.message}; and the record could not be written "
                              f"to {options.reports}: {exc.strerror or exc}")
    summary.details["record_dir"] = str(folder)
    summary.details["history_head"] = head
    doc = summary.as_json()
    change, check = record.audit_entries(doc)
    # Due for every run that changed something, not only a completed one: a run stopped
    # or failed after its variable edit or redeploy changed production, and the run that
    # resumes it may find nothing left to do (a no-op), so only this entry records it.
    due = options.apply and _acted(summary)
    summary.details["audit"] = {"changelog": change.strip(), "checkpoint": check.strip(),
                                "due": due}
    if options.write_audit and due:
        summary.details["audit"]["written"] = record.write_audit(
            doc, Path(settings.change_changelog), Path(settings.change_checkpoint), redact)
    return summary


def as_lines(summary: Summary) -> list[str]:
    """The summary for a terminal: one line a step, then the verdict."""
    out = [f"  {s['status']:<8} {s['stage']:<13} {s['step']}: {s['detail']}"
           for s in summary.steps]
    return [*out, f"{summary.operation} {summary.status}: {summary.message}"]
