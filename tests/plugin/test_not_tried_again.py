"""Through the gate: a target that did not answer is one cause in the reports, every
check that did not try it again joined to it by the type of the error behind its
failure (summary.json's ``again_of``), whatever words the check failed with."""

from __future__ import annotations

import json

import pytest

from opsgate.reports import reasons
from tests.gate_helpers import gate_project

CHECKS = """
import pytest

from opsgate.clients import web as http
from opsgate.errors import HttpCheckError
from opsgate.pytest_plugin.fixtures import fail

@pytest.mark.preflight
def test_database_first(target_db):
    pass

@pytest.mark.ledger
def test_database_again(target_db):
    pass

@pytest.mark.health
def test_origin_first(deployment):
    try:
        http.request(deployment, "GET", "/", what="deployment")
    except HttpCheckError as exc:
        fail(f"the deployment is not usable: {exc}")

@pytest.mark.knowledge_drift
def test_origin_again_in_words_of_its_own(deployment):
    try:
        http.request(deployment, "GET", "/", what="deployment")
    except HttpCheckError:
        fail("no word here says the origin was asked before")
"""


def test_each_target_that_did_not_answer_is_one_cause(pytester: pytest.Pytester,
                                                      clean_env: pytest.MonkeyPatch) -> None:
    gate_project(pytester, CHECKS)
    clean_env.setenv("DATABASE_URL", "postgresql://u:pw-again@127.0.0.1:9/db")
    clean_env.setenv("OPS_BASE_URL", "http://127.0.0.1:9")
    clean_env.setenv("ADMIN_PASSWORD", "admin-again")
    result = pytester.runpytest("-m", "preflight or ledger or health or knowledge_drift")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    (run,) = (pytester.path / "reports" / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    tests = {t["name"]: t for c in summary["checks"] for t in c["tests"]}
    assert "again_of" not in tests["test_database_first"]
    assert "again_of" not in tests["test_origin_first"]
    assert tests["test_database_again"]["again_of"] == tests["test_database_first"]["message"]
    assert tests["test_origin_again_in_words_of_its_own"]["again_of"] in \
        tests["test_origin_first"]["message"]
    assert "pw-again" not in json.dumps(summary)
    found = reasons.causes(summary["checks"])
    assert [sorted(t["name"] for t in c.tests) for c in found] == [
        ["test_database_again", "test_database_first"],
        ["test_origin_again_in_words_of_its_own", "test_origin_first"]]
    assert {c.kind for c in found} == {"Target unreachable"}
