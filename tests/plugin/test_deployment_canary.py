"""VERCEL_TOKEN never shows: a failing deployment run, against a real Vercel-shaped API
on 127.0.0.1 that accepts the canary token (and one where it refuses a canary token),
leaves the token in no report file, history line, attachment, stdout or stderr."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from opsgate.sandbox.reference_app import Faults
from opsgate.sandbox.vercel_api import SandboxVercel
from tests.gate_helpers import clean_env, run_gate
from tests.vercel_helpers import served_vercel_api

TOKEN = "vcl_canary-token-f17b"
CORE = "canary-token-f17b"


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[SandboxVercel, Faults, str]]:
    with served_vercel_api(TOKEN) as served:
        yield served


@pytest.mark.parametrize(("token", "extra"), [
    (TOKEN, []), (TOKEN, ["-n", "2"]), ("vcl_refused-" + TOKEN, []),
], ids=["accepted", "accepted-xdist", "refused"])
def test_no_token_in_any_artefact_of_a_failing_run(
        api: tuple[SandboxVercel, Faults, str], tmp_path: Path, token: str,
        extra: list[str]) -> None:
    state, faults, url = api
    faults.set("vercel-deploy-error", "vercel-backend-blob")
    try:
        env = clean_env(**{**state.env_values(), "VERCEL_TOKEN": token,
                           "VERCEL_API_URL": url, "OPS_BASE_URL": "http://127.0.0.1:9",
                           "GITHUB_STEP_SUMMARY": str(tmp_path / "reports" / "step.md")})
        run = run_gate(tmp_path, "-m", "deployment", "-rA", *extra, env=env)
    finally:
        faults.clear()
    assert run.code == 1, run.stdout[-2000:]
    assert len(run.failed()) >= 2
    reports = tmp_path / "reports"
    files = [p for p in reports.rglob("*") if p.is_file()]
    assert (reports / "history.jsonl").is_file() and (reports / "step.md").is_file()
    assert any(p.name == "summary.json" for p in files)
    texts = {"stdout": run.stdout, "stderr": run.stderr}
    texts.update({str(p.relative_to(reports)): p.read_bytes().decode("utf-8", "replace")
                  for p in files})
    leaks = [where for where, text in texts.items() if CORE in text]
    assert not leaks, "the Vercel token leaked into: " + ", ".join(leaks)
