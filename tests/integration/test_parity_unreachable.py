"""Parity against a target that does not answer: the run tries it once, and every parity
test after the first says so, as the login and deployment checks do."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from opsgate.sandbox import Sandbox
from tests.gate_helpers import clean_env, run_gate_here

pytestmark = pytest.mark.usefixtures("gate_in_process", "quick_retries")


def _closed_port() -> int:
    with socket.socket() as s:  # a port nothing listens on once it is closed
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("variable", ["OPS_BASE_URL", "DATABASE_URL"])
def test_parity_says_an_unreachable_target_was_not_tried_again(
        sandbox: Sandbox, tmp_path: Path, variable: str) -> None:
    port = _closed_port()
    value = (f"http://127.0.0.1:{port}" if variable == "OPS_BASE_URL"
             else f"postgresql://nobody:pw@127.0.0.1:{port}/app")
    run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m", "parity",
                        env=clean_env(**{variable: value}))
    failed = {k.split("::")[1]: m.split("\n")[0] for k, m in run.failed().items()}
    assert len(failed) >= 3, failed
    first, *later = failed.values()
    assert "not tried again" not in first, first
    assert later and all("not tried again" in m for m in later), later
