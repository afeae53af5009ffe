"""Evidence of the blob checks: the store asked, what it lists, the admin state's
content, the blob copy against Neon, and the objects under the prefix. The fallback's
canon-v1 hashes, which the drill record reads, are `evidence_types.BlobParityEvidence`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BlobStoreUsed:
    """Which store was asked ("Vercel Blob at ...", "folder ...")."""

    store: str

    def as_json(self) -> dict[str, Any]:
        return {"store": self.store}


@dataclass(frozen=True)
class BlobListing:
    """The admin state's objects (pathname, size, uploadedAt) and the pages listed
    (None: a folder, which has none)."""

    objects: list[dict[str, Any]]
    list_pages: int | None

    def as_json(self) -> dict[str, Any]:
        return {"objects": self.objects, "list_pages": self.list_pages}


@dataclass(frozen=True)
class BlobContentState:
    """content-state.json's keys and history.json's entries (None: not yet read)."""

    content_state_keys: int
    history_entries: int | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"content_state_keys": self.content_state_keys}
        if self.history_entries is not None:
            out["history_entries"] = self.history_entries
        return out


@dataclass(frozen=True)
class BlobNeonComparison:
    """The blob copy's counts against Neon's, what differs, the runbook's three lines
    and the pinned hash, if any (the hashes themselves: `BlobParityEvidence`)."""

    blob_counts: dict[str, Any]
    neon_counts: dict[str, Any]
    differences: dict[str, Any]
    runbook_lines: list[str]
    pinned_admin_state_sha256: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"blob_counts": self.blob_counts, "neon_counts": self.neon_counts,
                               "differences": self.differences,
                               "runbook_lines": self.runbook_lines}
        if self.pinned_admin_state_sha256:
            out["pinned_admin_state_sha256"] = self.pinned_admin_state_sha256
        return out


@dataclass(frozen=True)
class BlobObjects:
    """blob_objects: what the store holds under the prefix against what it should."""

    prefix: str
    expected: list[str]
    found: list[str]

    @property
    def missing(self) -> list[str]:
        return [p for p in self.expected if p not in self.found]

    @property
    def extra(self) -> list[str]:
        return [p for p in self.found if p not in self.expected]

    def as_json(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "expected": self.expected, "found": self.found,
                "missing": self.missing, "extra": self.extra,
                "object_count": len(self.found)}
