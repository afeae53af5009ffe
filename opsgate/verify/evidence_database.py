"""Evidence of the checks that read the target database's own records: the migration
ledger's three tests and preflight's backend setting and production markers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LedgerApplied:
    """ledger: each script's applied row (ids and payload hashes None when it has
    none), the migrations the expectations require, and the ledger's floors."""

    migrations: list[dict[str, Any]]  # name, ledger_id, payload_hash
    required_migrations: list[str]
    floors: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {"migrations": self.migrations, "required_migrations": self.required_migrations,
                "floors": self.floors}


@dataclass(frozen=True)
class LedgerChecksums:
    """ledger: each script's checksum, as the folder holds it today."""

    checksums: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {"checksums": self.checksums}


@dataclass(frozen=True)
class LedgerRows:
    ledger_rows: int

    def as_json(self) -> dict[str, Any]:
        return {"ledger_rows": self.ledger_rows}


@dataclass(frozen=True)
class StorageBackend:
    """preflight: ADMIN_STORAGE_BACKEND as the gate reads it (None: not set)."""

    backend: str | None

    def as_json(self) -> dict[str, Any]:
        return {"ADMIN_STORAGE_BACKEND": self.backend}


@dataclass(frozen=True)
class ProductionMarkers:
    """preflight: the expectations in effect, the counts of the tables whose floors
    preflight judges, and the domains present (None: not read)."""

    expectations: dict[str, Any]
    counts: dict[str, int | None]
    domains: list[str] | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"expectations": self.expectations, "counts": self.counts}
        if self.domains is not None:
            out["domains"] = self.domains
        return out
