"""The deployment check through the gate against the sandbox's Vercel API: green on the
clean sandbox, red with a message naming the fault for each fault it exists to catch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsgate.sandbox import Sandbox
from tests.gate_helpers import GateRun, clean_env, run_gate_here

#: Gate runs go through pytester in this process (verdicts, not processes).
pytestmark = pytest.mark.usefixtures("gate_in_process")

MODULE = "test_deployment"


@pytest.fixture
def clean(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.faults.clear()
    yield sandbox
    sandbox.faults.clear()


def gate(sandbox: Sandbox, tmp_path: Path, **env: str) -> GateRun:
    return run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m", "deployment",
                    env=clean_env(**env))


def test_clean_sandbox_is_green(clean: Sandbox, tmp_path: Path) -> None:
    run = gate(clean, tmp_path)
    assert run.code == 0, run.stdout[-3000:]
    assert {k for k, (o, _) in run.outcomes.items() if o == "passed"} == {
        f"{MODULE}::test_project_is_the_linked_one", f"{MODULE}::test_env_by_target",
        f"{MODULE}::test_latest_production_deployment_is_ready",
        f"{MODULE}::test_base_url_is_served_by_it"}
    (run_dir,) = (tmp_path / "reports" / "runs").iterdir()
    summary = (run_dir / "summary.json").read_text()
    assert json.loads(summary)["notes"] == []  # valid against its schema
    # Evidence: the variables by target with their types, never an encrypted value.
    assert '"DATABASE_URL": "encrypted"' in summary.replace('\\"', '"')
    assert "(encrypted; compared, not shown)" in summary  # preview's backend, read back


FAULTS = [
    ("vercel-backend-blob", {"test_env_by_target":
                             "ADMIN_STORAGE_BACKEND is 'blob' for production; it must be 'neon'"}),
    ("vercel-backend-sensitive", {"test_env_by_target":
                                  "ADMIN_STORAGE_BACKEND for production is of type sensitive"}),
    ("vercel-preview-backend-blob", {"test_env_by_target":
                                     "ADMIN_STORAGE_BACKEND for preview is not 'neon' (value "
                                     "not shown: the variable is encrypted)"}),
    ("vercel-no-database-url", {"test_env_by_target": "DATABASE_URL is not set for production"}),
    ("vercel-deploy-error", {
        "test_latest_production_deployment_is_ready":
            'is ERROR (BUILD_FAILED: Command "next build" exited with 1), not READY',
        "test_base_url_is_served_by_it": "; it is ERROR, so production's aliases stay on an "
                                         "earlier deployment: a consequence of the state"}),
    ("vercel-deploy-building", {
        "test_latest_production_deployment_is_ready": "is BUILDING, not READY",
        "test_base_url_is_served_by_it": "; it is BUILDING, so production's aliases stay"}),
    ("vercel-wrong-project", {
        "test_project_is_the_linked_one": "the API answered with",
        "test_base_url_is_served_by_it": "of project constellation-staging"}),
]


@pytest.mark.parametrize(("fault", "expected"), FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_turns_the_check_red(clean: Sandbox, tmp_path: Path, fault: str,
                                   expected: dict[str, str]) -> None:
    clean.faults.set(fault)
    run = gate(clean, tmp_path)
    assert run.code == 1
    failed = {k.split("::")[1]: m for k, m in run.failed().items()}
    assert set(failed) == set(expected), failed
    for test, needle in expected.items():
        assert needle in failed[test], failed[test]
    if fault == "vercel-preview-backend-blob":  # compared, never shown
        assert "'blob'" not in run.stdout and '"blob"' not in json.dumps(run.outcomes)
    assert "Traceback" not in run.stdout


def test_project_linked_to_the_wrong_project_is_red(clean: Sandbox, tmp_path: Path) -> None:
    """The real-world fault: the link names the staging project, which is fine in
    itself; only that it does not serve OPS_BASE_URL gives it away."""
    assert clean.vercel is not None
    run = gate(clean, tmp_path, VERCEL_PROJECT_ID=clean.vercel.staging.id)
    failed = {k.split("::")[1]: m for k, m in run.failed().items()}
    assert set(failed) == {"test_base_url_is_served_by_it"}, failed
    assert "is not served by the latest production deployment" in failed[
        "test_base_url_is_served_by_it"]


def test_project_file_is_read_and_a_disagreeing_one_is_red(clean: Sandbox, tmp_path: Path
                                                           ) -> None:
    assert clean.vercel is not None
    link = tmp_path / "project.json"
    link.write_text(json.dumps({"projectId": clean.vercel.project.id,
                                "orgId": clean.vercel.team_id}))
    run = gate(clean, tmp_path, VERCEL_PROJECT_ID="", VERCEL_ORG_ID="",
               OPSGATE_VERCEL_PROJECT_FILE=str(link))
    assert run.code == 0, run.stdout[-3000:]
    link.write_text(json.dumps({"projectId": clean.vercel.staging.id}))
    run = gate(clean, tmp_path, OPSGATE_VERCEL_PROJECT_FILE=str(link))
    message = run.failed()[f"{MODULE}::test_project_is_the_linked_one"]
    assert f"the project file names {clean.vercel.staging.id}" in message
    link.write_text("{not json")
    run = gate(clean, tmp_path, VERCEL_PROJECT_ID="", OPSGATE_VERCEL_PROJECT_FILE=str(link))
    message = run.failed()[f"{MODULE}::test_project_is_the_linked_one"]
    assert "not a readable JSON project file (JSONDecodeError)" in message, message


@pytest.mark.parametrize(("env", "needle"), [
    ({"VERCEL_PROJECT_ID": "prj_unknown"}, "answered HTTP 404 not_found: Project not found"),
    ({"VERCEL_TOKEN": "wrong-token-e5a1"}, "answered HTTP 403 forbidden: Not authorized; the "
     "Vercel API refused VERCEL_TOKEN"),
    ({"VERCEL_TOKEN": ""}, "VERCEL_TOKEN is not set"),
    ({"VERCEL_PROJECT_ID": "", "VERCEL_ORG_ID": ""}, "VERCEL_PROJECT_ID is not set"),
], ids=["unknown-project", "refused-token", "no-token", "no-project"])
def test_refusals_fail_in_one_line(clean: Sandbox, tmp_path: Path, env: dict[str, str],
                                   needle: str) -> None:
    run = gate(clean, tmp_path, **env)
    message = run.failed()[f"{MODULE}::test_project_is_the_linked_one"]
    assert needle in message, message
    assert "Traceback" not in run.stdout and "wrong-token-e5a1" not in run.stdout


@pytest.mark.usefixtures("quick_retries")
def test_an_api_that_does_not_answer_is_reported_once(clean: Sandbox, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = gate(clean, tmp_path, VERCEL_API_URL=f"http://127.0.0.1:{port}")
    failed = {k.split("::")[1]: m for k, m in run.failed().items()}
    assert len(failed) == 4, failed
    assert "after 3 attempts" in failed["test_project_is_the_linked_one"]
    later = [m for t, m in failed.items() if t != "test_project_is_the_linked_one"]
    assert all("did not answer earlier in this run" in m for m in later), later


def test_lists_are_read_across_pages(clean: Sandbox, tmp_path: Path) -> None:
    """Vercel pages its lists: with two variables a page, the required ones are on later
    pages, and the check still finds every one."""
    assert clean.vercel is not None
    clean.vercel.page_limit = 2
    try:
        run = gate(clean, tmp_path)
    finally:
        clean.vercel.page_limit = 100
    assert run.code == 0, run.stdout[-3000:]
    (run_dir,) = (tmp_path / "reports" / "runs").iterdir()
    summary = (run_dir / "summary.json").read_text()
    assert f'"variables_listed": {len(clean.vercel.project.envs)}' in summary.replace(
        '\\"', '"')


def test_a_rate_limited_api_is_waited_for(clean: Sandbox, tmp_path: Path) -> None:
    """429 with Retry-After on the first request: it is retried once after the time
    asked, the retry is one line in the test's log, and the check stays green."""
    clean.faults.set("vercel-429")
    run = run_gate_here(tmp_path, f"--env-file={clean.env_file}", "-m", "deployment", "-rP",
                        env=clean_env())
    assert run.code == 0, run.stdout[-3000:]
    retries = [line for line in run.stdout.splitlines()
               if "answered HTTP 429 rate_limited: Rate limit exceeded; retry 1 of 2 in 1.0 s"
               in line]
    assert retries, run.stdout[-3000:]


@pytest.mark.usefixtures("quick_retries")
def test_an_api_that_keeps_failing_is_red_naming_it(clean: Sandbox, tmp_path: Path) -> None:
    clean.faults.set("vercel-503")
    run = gate(clean, tmp_path)
    assert run.code == 1
    failed = {k.split("::")[1]: m for k, m in run.failed().items()}
    assert len(failed) == 4, failed
    cause = ("answered HTTP 503 service_unavailable: The Vercel API is temporarily "
             "unavailable; gave up after 3 attempts")
    assert all(cause in m for m in failed.values()), failed
    assert "Traceback" not in run.stdout
