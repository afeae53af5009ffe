"""Change control (runbook: "every database-affecting change includes a migration
script, a docs update, a changelog entry"; each new migration goes into the index, the
changelog and the checkpoint log): for the git range CI gives in OPSGATE_CHANGE_RANGE,
every migration script added or changed comes with all three entries. Reads git only."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.config import Settings
from opsgate.errors import ChangeRangeError, MissingEnvError
from opsgate.pytest_plugin.fixtures import fail
from opsgate.verify.change_control import ChangePaths, review
from opsgate.verify.evidence_types import EvidenceStore

pytestmark = pytest.mark.change_control


def test_each_migration_in_the_range_has_index_changelog_and_checkpoint_entries(
    ops_settings: Settings, pytestconfig: pytest.Config, evidence: EvidenceStore
) -> None:
    try:
        range_text = ops_settings.require_change_range()
    except MissingEnvError as exc:
        fail(str(exc))
    paths = ChangePaths(ops_settings.change_migrations, ops_settings.change_index,
                        ops_settings.change_changelog, ops_settings.change_checkpoint)
    try:
        found = review(range_text, paths, ops_settings.change_repo,
                       Path(pytestconfig.invocation_params.dir))
    except ChangeRangeError as exc:
        fail(str(exc))
    evidence.set(found.evidence())
    problems = found.problems()
    if problems:
        fail("; ".join(problems))
