"""Writing a run's reports: summary.json (schema-checked), drill-record.md, report.html,
Allure's environment.properties, and the history line. Everything passes through the
run's redactor first, so no secret reaches a file."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from .. import contracts
from . import drill_record, history, html
from .model import RunRecord

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
              redact: Callable[[str], str]) -> dict[str, Any]:
    """Write every artefact into ``run_dir`` and chain the run into the history."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(reports_root / ".history.lock")):
        entries = history.entries(reports_root / HISTORY)
        if entries:
            record.previous_run = entries[-1].get("run_id")
        summary = record.summary()
        text = redact(json.dumps(summary, indent=2, sort_keys=True, default=str))
        summary = json.loads(text)
        problems = contracts.problems("report-summary", summary)
        if problems:  # a bug in opsgate, never the target's fault: say so loudly
            summary["notes"].append("summary failed its own schema: " + "; ".join(problems))
            text = json.dumps(summary, indent=2, sort_keys=True)
        (run_dir / "summary.json").write_text(text + "\n", encoding="utf-8")
        (run_dir / "drill-record.md").write_text(redact(drill_record.render(record)),
                                                 encoding="utf-8")
        prev_href = (f"../{record.previous_run}/report.html" if record.previous_run else None)
        (run_dir / "report.html").write_text(redact(html.render(record, prev_href)),
                                             encoding="utf-8")
        allure_dir = run_dir / "allure-results"
        allure_dir.mkdir(exist_ok=True)
        server = None
        for ev in record.evidence_of("preflight").values():
            server = server or ev.get("server_version")
        (allure_dir / "environment.properties").write_text(
            redact(_environment_properties(record, server)), encoding="utf-8")
        import hashlib

        entry = history.append(reports_root / HISTORY, {
            "run_id": record.run_id,
            "dir": str(run_dir.relative_to(reports_root)) if run_dir.is_relative_to(
                reports_root) else str(run_dir),
            "verdict": record.verdict,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
            "target": summary["target"].get("name"),
            "target_kind": record.target_kind,
            "marker_expression": record.expression,
            "counts": summary["counts"],
            "summary_sha256": hashlib.sha256((text + "\n").encode()).hexdigest(),
        })
    return entry
