"""parity's evidence: the constellation API's figures against the database's, one
record per test (no report reads their fields: the drill record reads these tests'
outcomes by role, `opsgate.verify.evidence_types.PARITY_KEY_ROLES`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ParityShape:
    """The API answer's metadata and its size."""

    metadata: dict[str, Any] | None
    api_bytes: int

    def as_json(self) -> dict[str, Any]:
        return {"metadata": self.metadata, "api_bytes": self.api_bytes}


@dataclass(frozen=True)
class ParityCounts:
    """Nodes and edges on both sides, whether their digests agree, and what differs."""

    api: dict[str, Any]  # nodes, edges, metadata_counts
    database: dict[str, Any]  # nodes, edges
    digests_equal: dict[str, bool]  # "node ids", "edges"
    differences: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"api": self.api, "database": self.database,
                "digests_equal": self.digests_equal, "differences": self.differences}


@dataclass(frozen=True)
class ParityDomains:
    api_domains: list[str]
    database_domains: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"api_domains": self.api_domains, "database_domains": self.database_domains}


@dataclass(frozen=True)
class ParityBuildNotes:
    """Build and note node counts: the API's, its metadata's and the database's."""

    build: dict[str, Any]  # api, metadata, database
    notes: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"build": self.build, "notes": self.notes}


@dataclass(frozen=True)
class ParityEndpoints:
    dangling_edges: int

    def as_json(self) -> dict[str, Any]:
        return {"dangling_edges": self.dangling_edges}


@dataclass(frozen=True)
class ParityOverview:
    """The admin overview's answer and the database's counts of the same labels."""

    overview: dict[str, Any]
    database: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {"overview": self.overview, "database": self.database}
