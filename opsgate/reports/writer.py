"""Writing a run's reports: summary.json (schema-checked), drill-record.md, report.html,
Allure's environment.properties, the JUnit XML's head, and the history line.

Everything passes through the run's redactor: opsgate's own files are rendered from a
redacted record, and then every file of the run directory (Allure's and pytest's too)
is redacted in place (reports/redaction.py) before it is hashed (reports/seal.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from opsgate.clients import contracts
from opsgate.reports import (
    allure_files,
    allure_results,
    drill_record,
    history,
    history_html,
    html,
    redaction,
    seal,
    timeline,
)
from opsgate.reports import junit as junit_xml
from opsgate.reports.model import RunRecord
from opsgate.verify.evidence_types import ServerEvidence

HISTORY = "history.jsonl"


def run_dir_name(timestamp: str, target: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", target).strip("-")[:60] or "target"
    return f"{timestamp}_{safe}"


def _environment_properties(record: RunRecord, server_version: str | None) -> str:
    props = {
        "opsgate.version": record.opsgate_version,
        "target.kind": record.target_kind,
        **{f"target.{k}": v for k, v in record.target.items() if v is not None},
        "marker.expression": record.expression,
        "server.version": server_version or "unknown",
        "hash.version": "canon-v1",
    }
    return "".join(f"{k}={str(v).replace(chr(10), ' ')}\n" for k, v in props.items())


def write_run(record: RunRecord, reports_root: Path, run_dir: Path,
              redact: Callable[[str], str], junit: Path | None = None,
              allure: Path | None = None) -> tuple[dict[str, Any], str]:
    """Write every artefact into ``run_dir``, redact every file of it, seal it and chain
    it into the history. Returns the history line as written and the new head.

    ``junit`` is the JUnit XML pytest wrote for this run, when there is one; written
    elsewhere (``--junitxml PATH``), it is redacted and headed there too, and copied into
    the run directory so the run's record is complete. ``allure`` is the caller's
    ``--alluredir``, when it is not the run directory's: redacted too, not sealed (it
    may hold other runs' results).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(reports_root / ".history.lock")):
        entries = history.entries(reports_root / HISTORY)
        if entries:
            record.previous_run = entries[-1].get("run_id")
        clean = record.redacted(redact)
        summary = _checked_summary(record, clean, redact)
        _write_record_files(clean, summary, reports_root, run_dir)
        target_name = _write_allure_files(record, clean, entries, reports_root, run_dir,
                                          allure)
        junits = _redact_run(clean, run_dir, redact, junit, allure)
        junit_props = {"opsgate_target": target_name,
                       "opsgate_target_kind": clean.target_kind,
                       "opsgate_marker_expression": clean.expression,
                       "opsgate_run_id": record.run_id,
                       "opsgate_verdict": record.verdict}
        for path in junits:  # after redaction: nothing may touch the placeholder
            seal.junit_add_head_placeholder(path, allure_files.title(target_name),
                                            junit_props)
        # The hashes are added after redaction too: a redactor must never rewrite a
        # digest.
        entry, head = history.append_entry(
            reports_root / HISTORY,
            {**_history_fields(record, summary, reports_root, run_dir, redact),
             **seal.seal(run_dir)})
        write_history_page(reports_root, redact)
    for path in junits:
        seal.junit_set_head(path, head)
    return entry, head


def _checked_summary(record: RunRecord, clean: RunRecord, redact: Callable[[str], str]
                     ) -> dict[str, Any]:
    """The redacted record's summary, checked against its schema; a failure is a note on
    the run (and in the summary), never swallowed."""
    summary = clean.summary()
    problems = contracts.problems("report-summary", summary)
    if problems:  # a bug in opsgate, never the target's fault: say so loudly
        note = "summary failed its own schema: " + "; ".join(problems)
        record.notes.append(note)
        clean.notes.append(redact(note))
        summary = clean.summary()
    return summary


def _write_record_files(clean: RunRecord, summary: dict[str, Any], reports_root: Path,
                        run_dir: Path) -> None:
    """summary.json, drill-record.md and report.html, from the redacted record."""
    text = json.dumps(summary, indent=2, sort_keys=True, default=str)
    (run_dir / "summary.json").write_text(text + "\n", encoding="utf-8")
    (run_dir / "drill-record.md").write_text(drill_record.render(clean), encoding="utf-8")
    prev_href = (f"../{clean.previous_run}/report.html" if clean.previous_run else None)
    lines = history.read_lines(reports_root / HISTORY)
    position = html.Position(
        line=len(lines) + 1,
        previous_head=history.line_hash(lines[-1]) if lines else None,
        summary_sha256=seal.sha256_file(run_dir / "summary.json"),
        history_href=os.path.relpath(reports_root / history_html.NAME, run_dir))
    runs = timeline.points(reports_root)
    (run_dir / "report.html").write_text(html.render(clean, prev_href, position, runs),
                                         encoding="utf-8")


def _write_allure_files(record: RunRecord, clean: RunRecord, entries: list[dict[str, Any]],
                        reports_root: Path, run_dir: Path, allure: Path | None) -> str:
    """Allure's files in the run directory (its history carried over from the previous
    run, fixtures pruned, unfinished tests marked, environment.properties): the target's
    name, as shown."""
    allure_dir = run_dir / seal.ALLURE_DIR
    allure_dir.mkdir(exist_ok=True)
    target_name = str(clean.target.get("name") or clean.target_kind)
    allure_files.write(allure_dir, run_dir, reports_root, target_name, record.run_id)
    previous_dir = (reports_root / str(entries[-1].get("dir", ""))) if entries else None
    allure_files.carry_history(previous_dir, allure_dir)
    for results in {allure_dir, *([allure] if allure is not None else [])}:
        if results.is_dir():
            allure_files.prune_fixtures(results)
            # allure-pytest writes a test a stop cut short as passed: as summary.json says
            allure_results.mark_interrupted(results, clean)
    answered = clean.by_role(ServerEvidence.ROLE)
    server = (ServerEvidence.from_json(answered.evidence).server_version
              if answered is not None else None)
    (allure_dir / "environment.properties").write_text(
        _environment_properties(clean, server), encoding="utf-8")
    return target_name


def _redact_run(clean: RunRecord, run_dir: Path, redact: Callable[[str], str],
                junit: Path | None, allure: Path | None) -> list[Path]:
    """Every file of the run (and the caller's Allure folder) through the redactor: the
    JUnit XML files to head, marked when the run was interrupted (pytest's junitxml
    reads a test a stop cut short as passed; Allure's are marked with its files)."""
    # JUnit XML and Allure's files were written by pytest and allure-pytest (on every
    # xdist worker), not from the redacted record: every file passes through the
    # redactor before anything is hashed.
    junits = _junit_copies(junit, run_dir, redact)
    for path in junits:
        junit_xml.mark_interrupted(path, clean)
    redaction.redact_tree(run_dir, redact)
    if allure is not None and allure.is_dir() and not allure.is_relative_to(run_dir):
        redaction.redact_tree(allure, redact)
    return junits


def _history_fields(record: RunRecord, summary: dict[str, Any], reports_root: Path,
                    run_dir: Path, redact: Callable[[str], str]) -> dict[str, Any]:
    """The history line's fields before the seal's hashes: the run's name and folder as
    they are on disk, and what it found, redacted."""
    where = {"run_id": record.run_id,
             "dir": run_dir.relative_to(reports_root).as_posix()
             if run_dir.is_relative_to(reports_root) else str(run_dir)}
    described = redaction.redact_data({
        "verdict": record.verdict,
        "partial_checks": summary.get("partial_checks", []),
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "target": summary["target"].get("name"),
        "target_kind": record.target_kind,
        "marker_expression": record.expression,
        "counts": summary["counts"],
        "notes": summary["notes"],
    }, redact)
    return {**where, **described}


def write_history_page(reports_root: Path, redact: Callable[[str], str]) -> Path:
    """``history.html`` from the history as it now is (redacted like every artefact)."""
    page = reports_root / history_html.NAME
    total = len(history.read_lines(reports_root / HISTORY))
    page.write_text(history_html.render(timeline.points(reports_root), total),
                    encoding="utf-8")
    redaction.redact_file(page, redact)
    return page


def _junit_copies(junit: Path | None, run_dir: Path,
                  redact: Callable[[str], str]) -> list[Path]:
    """The JUnit XML files of this run: the run directory's, and the one pytest wrote
    elsewhere (redacted here, since it is outside the run directory)."""
    if junit is None or not junit.is_file():
        return []
    inside = run_dir / "junit.xml"
    if junit.resolve() == inside.resolve():
        return [inside]
    redaction.redact_file(junit, redact)
    shutil.copyfile(junit, inside)
    return [junit, inside]
