"""The runbook's "Latest verified drill record", filled in from one run's evidence."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opsgate.gate import CHECKS
from opsgate.reports.model import RunRecord
from opsgate.verify.evidence_types import PARITY_KEY_ROLES, BlobParityEvidence, DrillEvidence

RUNBOOK_ZONE = "America/New_York"

#: Checks with a line of their own above the rest (their evidence is read by role).
OWN_LINES = ("parity", "neon_drill", "blob_fallback")


def _window(record: RunRecord) -> str:
    start = datetime.fromisoformat(record.started_at.replace("Z", "+00:00"))
    end = datetime.fromisoformat(record.finished_at.replace("Z", "+00:00"))
    try:
        zone = ZoneInfo(RUNBOOK_ZONE)
        s, e = start.astimezone(zone), end.astimezone(zone)
        local = f"{s:%Y-%m-%d %H:%M}-{e:%H:%M} {s:%Z} ({RUNBOOK_ZONE})"
    except ZoneInfoNotFoundError:
        local = "local zone unavailable"
    return f"{start:%Y-%m-%d %H:%M:%S}-{end:%H:%M:%S} UTC; {local}"


def _status(check: dict[str, Any]) -> str:
    shown = {"passed": "pass", "partial": "pass, PARTIAL", "failed": "FAIL",
             "skipped": "SKIPPED (did not run)", "not run": "not run",
             "interrupted": "INTERRUPTED (did not finish; no verdict)"}[check["status"]]
    if check.get("partial"):
        shown += " (" + "; ".join(check["partial"]) + ")"
    return shown


def _title(record: RunRecord, drill: dict[str, Any]) -> str:
    """The runbook's heading only for a run that verified something: a run whose drill
    was interrupted, or that failed, did not produce a verified drill record."""
    if record.verdict == "passed" and drill["status"] in ("passed", "partial"):
        return "# Latest verified drill record"
    why = (record.interruption.sentence() if record.interruption is not None
           else f"verdict {record.verdict}, drill {drill['status']}")
    return f"# Drill record: NOT verified ({why})"


def render(record: RunRecord) -> str:
    checks = {c["marker"]: c for c in record.checks()}
    out = [
        _title(record, checks["neon_drill"]),
        "",
        f"Run `{record.run_id}` against {record.target_kind} target "
        f"`{record.target.get('name')}` ({record.target.get('database') or '-'}); "
        f"verdict: **{record.verdict}**.",
        "",
    ]
    # Failures of the gate itself ("no check ran"), which no check line below shows.
    out += [f"- Gate failure: {note}" for note in record.notes]
    out.append(f"- Verification window: {_window(record)}")
    parity = checks["parity"]
    line = f"- Post-deploy parity check: {_status(parity)}."
    if parity["status"] != "not run":
        keys = []
        for role, label in PARITY_KEY_ROLES:
            t = record.by_role(role)
            if t is not None:
                keys.append(label if t.outcome == "passed"
                            else f"{label}: FAIL ({t.message[:160]})")
        line += " Key checks: " + ", ".join(keys) + "."
    out.append(line)

    drill = checks["neon_drill"]
    line = f"- Neon backup/restore drill: {_status(drill)}."
    found = record.by_role(DrillEvidence.ROLE)
    ev = DrillEvidence.from_json(found.evidence if found is not None else {})
    if ev.source:
        line += f" Dumped from {ev.source} (restored into {ev.restore_target})."
    if ev.tables:
        rows = ", ".join(f"`{t['table']}={t['source_rows']}/{t['restored_rows']}`"
                         for t in ev.tables)
        line += f" Source/restored rows: {rows}. " + _combined_hash(ev.as_json())
    elif drill["status"] == "failed":
        line += " " + drill["tests"][0]["message"][:300] if drill["tests"] else ""
    out.append(line)
    out += _table_hashes(ev.as_json())

    blob = checks["blob_fallback"]
    line = f"- Blob fallback verification: {_status(blob)}."
    found = record.by_role(BlobParityEvidence.ROLE)
    parity_ev = BlobParityEvidence.from_json(found.evidence if found is not None else {})
    if parity_ev.blob_hash:
        if not parity_ev.compared:
            line += (f" Blob canonical hash `{parity_ev.blob_hash}`; Neon parity not "
                     "compared (no DATABASE_URL).")
        elif parity_ev.blob_hash == parity_ev.neon_hash:
            line += (f" Canonical parity hash match: blob and neon both "
                     f"`{parity_ev.blob_hash}`.")
        else:
            line += (f" Canonical parity hash MISMATCH: blob `{parity_ev.blob_hash}`, "
                     f"neon `{parity_ev.neon_hash}`.")
    out.append(line)

    # Every other check of the gate table, in its order, under its title: a check added
    # to the table is in the record without an edit here.
    out += [f"- {spec.title}: {_status(checks[spec.marker])}." for spec in CHECKS
            if spec.marker not in OWN_LINES]
    out += ["", "Hashes are canon-v1 (docs/canonical-hashing.md); secrets are never recorded.",
            ""]
    return "\n".join(out)


def _combined_hash(ev: dict[str, Any]) -> str:
    """The drill's one hash, said to be the hash of the per-table hashes listed under it,
    so that an auditor recomputes it from them (docs/canonical-hashing.md)."""
    ch = ev.get("canonical_hash", {})
    match = "match" if ch.get("match") else "MISMATCH"
    return (f"Canonical hash {match}: `{ch.get('source')}`"
            + ("" if ch.get("match") else f" vs restored `{ch.get('restored')}`")
            + " (combined: the SHA-256 of the RFC 8785 JSON of {table: that table's SHA-256}"
            " on one side; the per-table hashes are below).")


def _table_hashes(ev: dict[str, Any]) -> list[str]:
    """Each table's SHA-256 on both sides (COPY text, docs/canonical-hashing.md): what
    the combined hash is made of, and what an auditor recomputes with psql."""
    tables = ev.get("tables") or []
    if not tables:
        return []
    out = ["  - Per-table SHA-256, source / restored copy:"]
    for t in tables:
        same = t.get("source_sha256") == t.get("restored_sha256")
        out.append(f"    - `{t['table']}`: `{t.get('source_sha256')}` / "
                   f"`{t.get('restored_sha256') or 'missing'}`"
                   + ("" if same else " (DIFFERENT)"))
    return out
