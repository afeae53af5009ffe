"""What a rollback leaves behind: ``rollback.json`` (the summary) and ``rollback.md``
(for a human) in a run folder under the reports folder, a line in the hash-chained
history (listing both files' hashes, so ``opsgate reports verify`` checks them), and
the checkpoint and changelog entries the runbook asks for (printed, or appended with
``--write-audit`` to the files the change-control check reads).

Everything is redacted with the settings' secrets before it is written or printed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from opsgate.reports import history, seal
from opsgate.reports.redaction import redact_data

HISTORY = "history.jsonl"
#: A rollback's status -> the history's verdict. Never "passed": a dry run or a no-op
#: listed as passed beside the gate runs reads as a rollback carried out and checked.
VERDICTS = {"done": "done", "noop": "no-op", "planned": "dry-run",
            "interrupted": "interrupted"}


def run_folder(reports: Path, operation: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = reports / "rollback" / f"{stamp}_{operation}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    return folder


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# opsgate {doc['operation']}: {doc['status']}", "",
             f"{doc['message']}", "",
             f"- mode: {doc['mode']}", f"- reason: {doc.get('reason')}",
             f"- project: {doc.get('project', {}).get('name')}",
             f"- environments: {', '.join(doc.get('environments', []))}",
             f"- started: {doc['started_at']}, finished: {doc['finished_at']} "
             f"({doc['duration_s']} s)", "", "| stage | step | status | detail |",
             "|---|---|---|---|"]
    for s in doc["steps"]:
        detail = s["detail"].replace("|", "\\|")
        lines.append(f"| {s['stage']} | {s['step']} | {s['status']} | {detail} |")
    for p in doc.get("problems") or []:
        lines.append(f"\n- problem: {p}")
    return "\n".join(lines) + "\n"


def write(doc: dict[str, Any], reports: Path, redact: Callable[[str], str]
          ) -> tuple[Path, str]:
    """The run folder with both files, and the history's new head."""
    clean = redact_data(doc, redact)
    folder = run_folder(reports, str(clean["operation"]).replace(" ", "-"))
    text = json.dumps(clean, indent=2, sort_keys=True) + "\n"
    (folder / "rollback.json").write_text(text, encoding="utf-8")
    (folder / "rollback.md").write_text(markdown(clean), encoding="utf-8")
    entry = {
        "kind": "rollback", "run_id": folder.name,
        "dir": folder.relative_to(reports).as_posix(),
        "verdict": VERDICTS.get(str(clean["status"]), "failed"),
        "target": clean.get("project", {}).get("name"), "target_kind": "rollback",
        "started_at": clean["started_at"], "finished_at": clean["finished_at"],
        "counts": {}, "notes": [f"{clean['operation']} {clean['status']}: {clean['message']}"],
        # As a gate run's line lists its files: `opsgate reports verify` checks them.
        "artefacts": {name: seal.sha256_file(folder / name)
                      for name in ("rollback.json", "rollback.md")},
    }
    with FileLock(str(reports / ".history.lock")):
        _, head = history.append_entry(reports / HISTORY, entry)
    return folder, head


def audit_entries(doc: dict[str, Any]) -> tuple[str, str]:
    """The changelog bullet and the checkpoint line of this rollback."""
    day = str(doc["started_at"])[:10]
    what = (f"rollback {doc['operation'].split()[-1]} ({', '.join(doc.get('environments', []))})"
            f": {doc['status']}; reason: {doc.get('reason')}")
    return (f"- {day}: {what}; record {doc.get('record_dir')}\n",
            f"- {doc['started_at']} {what}\n")


def write_audit(doc: dict[str, Any], changelog: Path, checkpoint: Path,
                redact: Callable[[str], str]) -> list[str]:
    """Appends both entries; returns the files written."""
    change, check = (redact(t) for t in audit_entries(doc))
    for path, line in ((changelog, change), (checkpoint, check)):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(line)
    return [str(changelog), str(checkpoint)]
