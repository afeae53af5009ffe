"""The summary of one refresh: `opsgate.operation`'s `Summary` with the refresh's own
fields, built as the stages go, so a stop at any stage (a refusal, a failed tool,
Ctrl-C) still prints and keeps the whole documented document.

Why a class of its own: the refresh's summary was documented (docs/refresh.md, "The
summary") before the operation skeleton existed, and scripts read it as ``--json`` and
as the run folder's ``summary.json``; `RefreshSummary.as_json` keeps that document
exactly, field for field and in its order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opsgate.operation import Summary, iso, now
from opsgate.verify import canon

__all__ = ["RefreshSummary"]


@dataclass
class RefreshSummary(Summary):
    """One refresh as it went. ``source`` and ``target`` are the sides as the summary
    shows them (masked URL, ``host:port/database``, server identity; the target's
    production signs and approval), filled in as each is learned."""

    source: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    run_folder: str | None = None
    archives: dict[str, dict[str, Any]] = field(default_factory=dict)
    expectations: str | None = None
    #: The source's expected markers that failed (one line each).
    source_markers: list[str] = field(default_factory=list)
    #: What the markers check saw; in the JSON only once the check has run.
    source_seen: dict[str, Any] | None = None
    source_read_only: dict[str, Any] | None = None
    #: One item per contract table: rows and hashes on both sides, and whether they match.
    tables: list[dict[str, Any]] = field(default_factory=list)
    source_hash: str | None = None
    target_hash_after: str | None = None
    apply_blockers: list[str] = field(default_factory=list)
    restore_method: str | None = None
    ledger_id: int | None = None
    #: The pg_dump/pg_restore/psql chosen; in the JSON only once they were found (and
    #: so could have run: the stop handling ends their sessions only then).
    client_tools: str | None = None
    #: When the run started, for the ledger row and for finding the refresh's own server
    #: sessions after a stop (``started_at`` is its ISO form).
    started: datetime = field(default_factory=now, repr=False)

    def __post_init__(self) -> None:
        self.started_at = iso(self.started)

    def as_json(self) -> dict[str, Any]:
        """Exactly the fields docs/refresh.md lists ("The summary"), in its order: a reader
        of the summary is a script, and a field added, renamed or moved breaks it."""
        doc: dict[str, Any] = {
            "operation": self.operation, "mode": self.mode, "status": self.status,
            "source": dict(self.source), "target": dict(self.target),
            "run_folder": self.run_folder, "archives": dict(self.archives),
            "expectations": self.expectations, "source_markers": list(self.source_markers),
            "source_read_only": self.source_read_only, "tables": list(self.tables),
            "source_hash": self.source_hash, "hash_version": canon.VERSION,
            "target_hash_after": self.target_hash_after,
            "apply_blockers": list(self.apply_blockers),
            "restore_method": self.restore_method, "ledger_id": self.ledger_id,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "duration_s": self.duration_s, "timings_s": dict(self.timings_s),
            "message": self.message,
        }
        if self.source_seen is not None:
            doc["source_seen"] = self.source_seen
        if self.client_tools is not None:
            doc["client_tools"] = self.client_tools
        doc["exit_code"] = self.exit_code
        return doc
