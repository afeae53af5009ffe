"""The gate table (`opsgate.gate.CHECKS`) is the one list of checks: every other place
that names the checks follows it, so adding a check is its module, its row and its docs
(docs/adding-a-check.md). Each test here goes red when one place disagrees: a flag
without its default, a module marked with another marker, a check docs/checks.md does
not describe or list, a summary the schema refuses, a report that leaves a check out, a
role the reports read that no check carries."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from opsgate.clients import contracts
from opsgate.config import FLAG_DEFAULTS
from opsgate.gate import CHECKS, CheckSpec
from opsgate.reports import drill_record, html
from opsgate.reports.model import SUMMARY_SCHEMA, RunRecord
from opsgate.reports.step_summary import step_summary
from opsgate.verify.evidence_types import REPORT_ROLES, ROLE_MARKER

ROOT = Path(__file__).resolve().parents[2]
CHECKS_MD = (ROOT / "docs" / "checks.md").read_text(encoding="utf-8")
IDS = [c.marker for c in CHECKS]


def _default(spec: CheckSpec) -> str:
    return "on" if FLAG_DEFAULTS[spec.flag] else "off"


@functools.cache
def _module(spec: CheckSpec) -> ModuleType:
    """The check's module, imported under a name of its own (dataclasses need it in
    ``sys.modules``)."""
    name = f"gate_table_{spec.marker}"
    loaded = importlib.util.spec_from_file_location(name, ROOT / spec.module)
    assert loaded is not None and loaded.loader is not None, spec.module
    module = importlib.util.module_from_spec(loaded)
    sys.modules[name] = module
    loaded.loader.exec_module(module)
    return module


def _record() -> RunRecord:
    return RunRecord(run_id="r", started_at="2026-01-01T00:00:00.000Z", target={"name": "t"},
                     target_kind="sandbox", expression="", expression_source="-m",
                     opsgate_version="0", finished_at="2026-01-01T00:00:01.000Z")


def test_every_flag_has_its_one_default() -> None:
    assert [c.flag for c in CHECKS] == list(FLAG_DEFAULTS)
    assert len({c.marker for c in CHECKS}) == len(CHECKS)


@pytest.mark.parametrize("spec", CHECKS, ids=IDS)
def test_the_module_is_marked_with_its_row(spec: CheckSpec) -> None:
    marks = getattr(_module(spec), "pytestmark", None)
    names = {m.name for m in (marks if isinstance(marks, list) else [marks]) if m is not None}
    assert spec.marker in names, f"{spec.module} is not marked {spec.marker}"


@pytest.mark.parametrize("spec", CHECKS, ids=IDS)
def test_docs_checks_describes_and_lists_the_check(spec: CheckSpec) -> None:
    heading = f"## {spec.marker} (`{spec.flag}`, default {_default(spec)})"
    assert heading in CHECKS_MD, f"docs/checks.md has no section {heading!r}"
    row = (f"| `{spec.module}` | `{spec.marker}` | `{spec.flag}` | "
           f"{str(FLAG_DEFAULTS[spec.flag]).lower()} | ")
    line = next((ln for ln in CHECKS_MD.splitlines() if ln.startswith(row)), None)
    assert line is not None, f"docs/checks.md's flag table has no row {row!r}"
    assert all(var in line for var in spec.required_env), line
    assert re.search(rf"\| {re.escape(spec.marker)} \|$", CHECKS_MD, re.M), (
        f"docs/checks.md's 'Which check owns which fact' names no fact of {spec.marker}")


def test_the_flag_table_is_in_the_gate_tables_order() -> None:
    rows = re.findall(r"^\| `checks/[^`]+` \| `([a-z_]+)` \|", CHECKS_MD, re.M)
    assert rows == IDS


def test_configuration_points_to_the_one_flag_table() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert "checks.md#flags-and-markers" in text
    assert "| check module | marker | flag |" not in text  # a second copy drifts


def test_a_summary_lists_every_check_and_its_schema_takes_it() -> None:
    summary = _record().summary()
    assert summary["schema"] == SUMMARY_SCHEMA
    assert [c["marker"] for c in summary["checks"]] == IDS
    assert contracts.problems("report-summary", summary) == []
    schema = json.loads((ROOT / "fixtures/contracts/report-summary.schema.json").read_text())
    assert schema["properties"]["schema"]["const"] == SUMMARY_SCHEMA


def test_every_report_names_every_check() -> None:
    record = _record()
    page = html.render(record, None)
    steps = step_summary(record, "0" * 64, ROOT, lambda s: s, ROOT)
    drill = drill_record.render(record)
    for spec in CHECKS:
        assert spec.marker in page, f"report.html leaves out {spec.marker}"
        assert f"| {spec.marker} |" in steps, f"the step summary leaves out {spec.marker}"
        assert (spec.marker in drill_record.OWN_LINES
                or f"- {spec.title}: not run." in drill), f"drill-record.md leaves out {spec.marker}"


def test_every_role_a_report_reads_is_carried_by_exactly_one_check() -> None:
    carried: dict[str, list[str]] = {}
    for spec in CHECKS:
        module = _module(spec)
        for name in dir(module):
            for mark in getattr(getattr(module, name), "pytestmark", []):
                if name.startswith("test_") and mark.name == ROLE_MARKER:
                    carried.setdefault(str(mark.args[0]), []).append(f"{spec.marker}::{name}")
    for role in REPORT_ROLES:
        assert len(carried.get(role, [])) == 1, f"role {role}: {carried.get(role)}"
    assert set(carried) <= set(REPORT_ROLES), "a role no report reads"
