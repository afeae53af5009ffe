"""The renderers of the reports on evidence of every shape a check writes: escaped,
tabular, bounded; the Allure containers pruned of pytest plumbing; the key figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

from opsgate.reports import (
    allure_files,
    evidence_html,
    figures,
    history,
    history_html,
    html,
    model,
    svg,
    timeline,
)
from opsgate.reports.step_summary import step_summary

HOSTILE = "<script>alert('x')</script>&\"'"


def test_every_string_is_escaped_keys_and_values_at_every_depth() -> None:
    evidence = {HOSTILE: HOSTILE, "rows": [{HOSTILE: HOSTILE, "match": False}],
                "sides": {"a": {HOSTILE: 1}, "b": {HOSTILE: 2}}, "list": [HOSTILE]}
    html = evidence_html.render(evidence)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_a_list_of_dicts_is_a_table_with_compared_columns_adjacent() -> None:
    tables = [{"match": True, "restored_rows": 3, "restored_sha256": "a" * 64,
               "source_rows": 3, "source_sha256": "a" * 64, "table": "kb_edges"},
              {"match": False, "restored_rows": 2, "restored_sha256": "b" * 64,
               "source_rows": 3, "source_sha256": "c" * 64, "table": "kb_entities"}]
    html = evidence_html.render(tables)
    assert ("<tr><th>table</th><th>source_rows</th><th>restored_rows</th>"
            "<th>source_sha256</th><th>restored_sha256</th><th>match</th></tr>") in html
    assert html.count("<tr class='badrow'>") == 1  # the table that does not match
    assert "<code class='hash'>" + "c" * 64 in html


def test_sides_of_a_comparison_share_one_table_and_scalars_two_columns() -> None:
    html = evidence_html.render({"kb": {"nodes": 360, "edges": 436},
                                 "payload": {"nodes": 359, "edges": 436}})
    assert "<tr><th></th><th>nodes</th><th>edges</th></tr>" in html
    assert "<td><b>kb</b></td><td>360</td>" in html and "<td><b>payload</b></td><td>359</td>" in html
    two = evidence_html.render({"status": 200, "ok": True, "none": None})
    assert "<tr><td><b>status</b></td><td>200</td></tr>" in two
    assert "<span class='ok'>yes</span>" in two and "none" in two


def test_long_evidence_is_bounded() -> None:
    html = evidence_html.render([{"id": i} for i in range(evidence_html.MAX_ROWS + 7)])
    assert "… and 7 more" in html and html.count("<tr>") == evidence_html.MAX_ROWS + 2
    items = evidence_html.render(list(range(evidence_html.MAX_ITEMS + 3)))
    assert "… and 3 more" in items


def test_key_figures_of_the_drill_and_of_counts() -> None:
    check = {"tests": [{"evidence": {
        "tables": [{"table": "a", "source_rows": 2, "match": True},
                   {"table": "b", "source_rows": 5, "match": False}],
        "canonical_hash": {"match": False}, "counts": {"a": 2, "b": 5}, "elapsed_ms": 3}}]}
    assert figures.of_check(check) == ["tables 1/2 identical (7 source rows)",
                                       "2 tables, 7 rows", "canonical_hash match false"]


def test_sparkline_and_strip_are_inline_svg_with_escaped_titles() -> None:
    line = svg.sparkline([578, None, 0])
    assert line.startswith("<svg") and "#dc2626" in line  # dropped to zero: red
    assert svg.sparkline([5]) == "<span class='muted'>one run</span>"
    strip = svg.verdict_strip([("passed", HOSTILE), ("failed", "b")])
    assert strip.count("<rect ") == 2 and "<script>" not in strip


def test_pruning_drops_plumbing_and_keeps_fixtures_that_say_something(tmp_path: Path) -> None:
    """Containers as allure-pytest 2.x writes them (names from a real gate run)."""
    container = {"uuid": "c1", "children": ["t1"], "befores": [
        {"name": "_allure_labels", "status": "passed", "start": 1, "stop": 2},
        {"name": "target_db", "status": "passed", "start": 1, "stop": 2, "steps": [
            {"name": "connect: read-only session to postgresql://u:***@h/db",
             "status": "passed", "start": 1, "stop": 2}]},
        {"name": "deployment", "status": "broken", "start": 1, "stop": 2,
         "statusDetails": {"message": "cannot connect"}}],
        "afters": [{"name": "evidence::<lambda>", "start": 3},
                   {"name": "target_db::1", "start": 3}]}
    only_plumbing = {"uuid": "c2", "children": ["t1"],
                     "befores": [{"name": "expectations", "status": "passed"}],
                     "afters": [{"name": "expectations::<lambda>"}]}
    (tmp_path / "c1-container.json").write_text(json.dumps(container))
    (tmp_path / "c2-container.json").write_text(json.dumps(only_plumbing))
    assert allure_files.prune_fixtures(tmp_path) == 5
    assert not (tmp_path / "c2-container.json").exists()
    kept = json.loads((tmp_path / "c1-container.json").read_text())
    assert [b["name"] for b in kept["befores"]] == [
        "connect: read-only session to postgresql://u:***@h/db", "deployment"]
    assert kept["afters"] == []


def test_categories_sort_the_gates_failure_messages() -> None:
    """Allure 2 matches the whole message; each kind on a message opsgate prints."""
    messages = {
        "Missing variable": "Failed: missing DATABASE_URL_UNPOOLED: required by the "
                            "neon_drill check and not set",
        "Target unreachable": "cannot connect to postgresql://u:***@h/db: connection refused",
        "Schema or contract": "GET /api/constellation does not match the contract: nodes",
        "Data drift": "AssertionError: kb_entity_sources was emptied: 578 rows\nin run r, 0 now",
    }
    for kind, message in messages.items():
        matched = next(c["name"] for c in allure_files.CATEGORIES
                       if re.fullmatch(c["messageRegex"], message))
        assert matched == kind, (kind, message)


def _record() -> model.RunRecord:
    record = model.RunRecord(run_id="r1", started_at="t0", target={"name": "prod"},
                       target_kind="environment", expression="parity or ledger",
                       expression_source="-m", opsgate_version="0", exit_status=1)
    down = "cannot connect to postgresql://u:***@h/db: connection refused"
    for nodeid, marker, message in (
            ("checks/test_parity.py::test_a", "parity", down),
            ("checks/test_ledger.py::test_b", "ledger", down),
            ("checks/test_parity.py::test_c", "parity", "nodes: api 359 != database 360")):
        record.tests[nodeid] = model.TestOutcome(nodeid, nodeid.split("::")[1], marker, "failed",
                                           0.1, message, {"rows": 1})
    return record


def test_one_line_per_cause_on_the_page_and_in_the_step_summary() -> None:
    record = _record()
    page = html.render(record, None)
    reasons = page[page.index("Why it failed"):page.index("<h2>Checks</h2>")]
    assert "(2 causes, 3 tests)" in reasons and reasons.count("<li>") == 2
    assert reasons.count("cannot connect") == 1 and "test_a" in reasons and "test_b" in reasons
    text = step_summary(record, "0" * 64, Path("reports"), lambda s: s, Path("."))
    why = text[text.index("Why it failed:"):].split("\n\n")[0]
    assert why.count("\n- ") == 2 and why.count("cannot connect") == 1
    assert "- **parity** `test_a`, **ledger** `test_b` failed: cannot connect" in why


def test_damaged_earlier_runs_are_skipped_not_fatal(tmp_path: Path) -> None:
    """history.html and the trend read earlier runs' files, which may be edited."""
    shapes = [[], {"checks": "x"}, {"checks": [{"marker": "health", "tests": [
        {"evidence": ["not", "a", "dict"]}]}]}, {"checks": [{"marker": "health", "tests": [
            {"evidence": {"counts": {"kb_edges": 436, "flag": True}}}]}]}]
    for i, shape in enumerate(shapes):
        run = tmp_path / "runs" / f"r{i}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps(shape))
        history.append(tmp_path / "history.jsonl", {"run_id": f"r{i}", "dir": f"runs/r{i}",
                                                     "verdict": "passed", "counts": "x"})
    with (tmp_path / "history.jsonl").open("a") as f:
        f.write("not json\n")
    runs = timeline.points(tmp_path)
    assert [p.counts for p in runs] == [{}, {}, {}, {"kb_edges": 436}]
    page = history_html.render(runs, 5)
    assert "kb_edges" in page and "the last 4 of 5 lines" in page
