"""The operation skeleton: a stop at any stage still gives a complete summary, times
add up per label, and only the documented stages exist."""

from __future__ import annotations

import json

import pytest

from opsgate import operation
from opsgate.errors import OpsgateError


def test_a_stop_gives_a_finished_summary_with_its_steps() -> None:
    s = operation.Summary("rollback to-blob", "apply", details={"environments": ["production"]})
    s.step("preconditions", "fallback current", "done", "hashes equal")
    with pytest.raises(operation.Stop) as caught, s.timed("apply"):
        raise operation.Stop("failed", operation.EXIT_FAILED, "deployment ended in ERROR")
    s.stopped(caught.value)
    doc = json.loads(json.dumps(s.as_json()))
    assert doc["status"] == "failed" and doc["exit_code"] == 1
    assert doc["message"] == "deployment ended in ERROR"
    assert doc["steps"] == [{"stage": "preconditions", "step": "fallback current",
                             "status": "done", "detail": "hashes equal"}]
    assert "apply" in doc["timings_s"] and doc["duration_s"] is not None
    assert doc["finished_at"].endswith("Z") and doc["environments"] == ["production"]


def test_stop_is_one_of_opsgates_errors_and_stages_are_checked() -> None:
    assert issubclass(operation.Stop, OpsgateError)
    with pytest.raises(ValueError, match="unknown stage"):
        operation.Summary("x", "dry-run").step("cleanup", "x", "done")


def test_exit_codes_are_the_runners() -> None:
    from opsgate.migrate import runner

    assert (operation.EXIT_OK, operation.EXIT_FAILED, operation.EXIT_USAGE,
            operation.EXIT_INTERRUPTED) == (runner.EXIT_OK, runner.EXIT_FAILED,
                                            runner.EXIT_USAGE, runner.EXIT_INTERRUPTED)
