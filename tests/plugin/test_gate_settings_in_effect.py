"""In a gate run the run's settings are in effect for the session: what a check reaches
without them in hand (a table hash's connections, a blob store's time-out, the
sandbox's PostgreSQL programs) reads ``--env-file`` as the checks do; after the run, the
process environment again."""

from __future__ import annotations

import pytest

from opsgate.config import in_effect
from tests.gate_helpers import gate_project

CHECK = """
import pytest
from opsgate.clients import web
from opsgate.verify import tablehash

@pytest.mark.preflight
def test_preflight():
    assert tablehash.hash_connections() == 3
    assert web.client().timeout.read == 15.0
"""


def test_the_env_files_values_are_in_effect_during_the_run(
        pytester: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    gate_project(pytester, CHECK)
    env = pytester.path / "target.env"
    env.write_text("DATABASE_URL=postgresql://u:pw@127.0.0.1:9/db\n"
                   "OPSGATE_HASH_CONNECTIONS=3\nRUN_OPS_PARITY=false\nRUN_OPS_LEDGER=false\n")
    result = pytester.runpytest("-v", f"--env-file={env}", "--no-reports")
    result.assert_outcomes(passed=1)
    assert in_effect().hash_connections == 2
