"""blob_objects through the gate on the sandbox: green on the sandbox as built, red on
an object missing and on an object the admin state does not name, each alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsgate.sandbox import Sandbox
from tests.gate_helpers import GateRun, clean_env, run_gate_here

pytestmark = pytest.mark.usefixtures("gate_in_process")

PREFIX = "admin/"
TEST = "test_blob_objects::test_blob_store_holds_exactly_the_admin_state"


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The sandbox with its blob objects as they were before the test."""
    kept = {b.pathname: b.data for b in sandbox.bucket.listing("")}
    yield sandbox
    for pathname in [b.pathname for b in sandbox.bucket.listing("")]:
        sandbox.bucket.delete(pathname)
    for pathname, data in kept.items():
        sandbox.bucket.put(pathname, data)


def gate(sb: Sandbox, tmp_path: Path) -> GateRun:
    return run_gate_here(tmp_path, f"--env-file={sb.env_file}", "-m",
                         "blob_objects or blob_fallback", env=clean_env())


def test_the_sandbox_as_built_holds_exactly_the_admin_state(sb: Sandbox,
                                                            tmp_path: Path) -> None:
    run = gate(sb, tmp_path)
    assert run.code == 0 and not run.failed(), run.stdout[-2000:]
    assert run.outcomes[TEST][0] == "passed"


def test_an_object_missing_is_red(sb: Sandbox, tmp_path: Path) -> None:
    sb.bucket.delete(PREFIX + "history.json")
    failed = gate(sb, tmp_path).failed()
    # The missing file is also blob_fallback's fact (the copy is not usable).
    assert {k.split("::")[0] for k in failed} == {"test_blob_objects", "test_blob_fallback"}
    assert "missing admin/history.json" in failed[TEST], failed[TEST]


def test_an_extra_object_is_red_here_alone(sb: Sandbox, tmp_path: Path) -> None:
    sb.bucket.put(PREFIX + "content-state.json.bak", json.dumps({}).encode())
    failed = gate(sb, tmp_path).failed()
    assert set(failed) == {TEST}, failed
    assert ("1 object(s) the admin state does not name: admin/content-state.json.bak"
            in failed[TEST]), failed[TEST]
