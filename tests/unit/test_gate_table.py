from __future__ import annotations

import pytest

from opsgate.config import FLAG_DEFAULTS
from opsgate.gate import BY_MARKER, CHECKS, needs_target, selected_checks


def test_every_check_has_a_flag_with_a_default() -> None:
    assert {c.flag for c in CHECKS} == set(FLAG_DEFAULTS)
    assert not FLAG_DEFAULTS["RUN_OPS_DEPLOYMENT"] and not FLAG_DEFAULTS["RUN_OPS_CHANGE_CONTROL"]


@pytest.mark.parametrize(("expression", "selected", "target"), [
    ("change_control", {"change_control"}, False),
    ("change_control or ledger", {"change_control", "ledger"}, True),
    ("deployment", {"deployment"}, True),
    ("not preflight", set(BY_MARKER) - {"preflight"}, True),
    ("health and not health", set(), True),  # selects nothing: the rule stays
    ("", set(), True),
])
def test_the_target_requirement_follows_the_selection(expression: str, selected: set[str],
                                                      target: bool) -> None:
    if expression:
        assert {c.marker for c in selected_checks(expression)} == selected
    assert needs_target(expression) is target
