"""Typed evidence: what a check hands the plugin, as a dataclass with its JSON form.

Reports used to find a check's evidence by the test function's name and read it back
by dict key, so renaming a test or a key blanked the drill record without a failure.
Now a test whose evidence a report needs carries a role (``@pytest.mark.opsgate_role``,
stable across renames), and the report reads the typed fields of the evidence class
that role names (`from_json`). ``as_json`` is exactly the evidence JSON summary.json
has always held, so the summary's contract is unchanged.

`EvidenceStore` is what the ``evidence`` fixture gives a check: read-only (a mapping),
written only by `EvidenceStore.set` with a typed record, by checks and fixtures alike (a
fixture sets its own record before the test sets the test's). Checks' records that no
report reads live beside the facts they hold (``evidence_parity``, ``evidence_blob``,
``evidence_deployment``, ``evidence_database``; drift's and change control's in their
modules); the ones reports read are here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

#: The marker that names a test's role for the reports: ``opsgate_role("drill.restore")``.
ROLE_MARKER = "opsgate_role"


class Evidence(Protocol):
    """Any typed evidence: its JSON form is what every report file holds."""

    def as_json(self) -> dict[str, Any]: ...


class EvidenceStore(Mapping[str, Any]):
    """A check's evidence: the typed records handed over with `set`, merged. No item
    assignment and no ``update``: a key written by hand is evidence no type describes,
    and nothing holds its JSON to summary.json's (a self-test holds checks/ to it)."""

    def __init__(self) -> None:
        self._json: dict[str, Any] = {}

    def set(self, record: Evidence) -> None:
        """Hand a typed record to the plugin: its JSON replaces what its keys name (a
        check may set a record as soon as its facts are known, and a fuller one later:
        what a failure left is what was known when it came)."""
        self._json.update(record.as_json())

    def as_json(self) -> dict[str, Any]:
        return dict(self._json)

    def rewind(self, earlier: Mapping[str, Any]) -> None:
        """Back to ``earlier`` (what `as_json` gave before the test ran): a read-only
        check tried once more on a new connection drops what its first attempt set, of
        a snapshot no longer read, and keeps what its fixtures set before it."""
        self._json = dict(earlier)

    def __getitem__(self, key: str) -> Any:
        return self._json[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._json)

    def __len__(self) -> int:
        return len(self._json)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class Partial:
    """What a check that passed did not verify (any check may set it): the run's
    ``partial_checks`` and every report say it, never a silent pass."""

    partial: str

    @classmethod
    def from_json(cls, evidence: Mapping[str, Any]) -> Partial | None:
        value = evidence.get("partial")
        return cls(str(value)) if value else None

    def as_json(self) -> dict[str, Any]:
        return {"partial": self.partial}


@dataclass(frozen=True)
class ConnectionLostAndRetried:
    """A read-only check whose connection the database ended (a Neon compute
    restarting) and which ran once more, whole, on a new connection: what ended the
    first (any check on the run's read-only session may carry it)."""

    connection_lost_and_retried: str

    def as_json(self) -> dict[str, Any]:
        return {"connection_lost_and_retried": self.connection_lost_and_retried}


@dataclass(frozen=True)
class DrillEvidence:
    """neon_drill: the restore drill's tables on both sides and its combined hash."""

    ROLE: ClassVar[str] = "drill.restore"
    tables: list[dict[str, Any]]
    canonical_hash: dict[str, Any]
    source: str | None
    restore_target: str | None
    #: The drill's other facts (archive, tools, timings, ...), as the drill writes them.
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_drill(cls, evidence: dict[str, Any]) -> DrillEvidence:
        rest = {k: v for k, v in evidence.items()
                if k not in ("tables", "canonical_hash", "source", "restore_target")}
        return cls(_list(evidence.get("tables")), _dict(evidence.get("canonical_hash")),
                   evidence.get("source"), evidence.get("restore_target"), rest)

    from_json = from_drill

    def as_json(self) -> dict[str, Any]:
        return {**self.details, "tables": self.tables, "canonical_hash": self.canonical_hash,
                "source": self.source, "restore_target": self.restore_target}


@dataclass(frozen=True)
class BlobParityEvidence:
    """blob_fallback: the blob copy's canon-v1 hash against Neon's (None: not compared)."""

    ROLE: ClassVar[str] = "blob.parity"
    blob_hash: str | None
    neon_hash: str | None = None
    partial: str | None = None

    @classmethod
    def from_json(cls, evidence: dict[str, Any]) -> BlobParityEvidence:
        def text(key: str) -> str | None:
            value = evidence.get(key)
            return value if isinstance(value, str) else None
        return cls(text("blob_hash"), text("neon_hash"), text("partial"))

    @property
    def compared(self) -> bool:
        return self.partial is None and self.neon_hash is not None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"blob_hash": self.blob_hash}
        if self.neon_hash is not None:
            out["neon_hash"] = self.neon_hash
        if self.partial is not None:
            out["partial"] = self.partial
        return out


@dataclass(frozen=True)
class HealthCounts:
    """health: each contract table's row count (None: the table is missing)."""

    ROLE: ClassVar[str] = "health.counts"
    #: The check whose tests hold it (how a summary written before roles is read).
    MARKER: ClassVar[str] = "health"
    counts: dict[str, int | None]

    @classmethod
    def from_json(cls, evidence: dict[str, Any]) -> HealthCounts:
        counts = _dict(evidence.get("counts"))
        return cls({str(k): v for k, v in counts.items()
                    if v is None or (isinstance(v, int) and not isinstance(v, bool))})

    def counted(self) -> dict[str, int]:
        """The tables that were counted (a missing table has no count)."""
        return {k: v for k, v in self.counts.items() if v is not None}

    def as_json(self) -> dict[str, Any]:
        return {"counts": self.counts}


@dataclass(frozen=True)
class HealthTrend:
    """health: each table's count against the last green run of the target."""

    #: That run's id, or None when there is none.
    compared_with: str | None
    #: Per table: ``previous``, ``now`` and ``change`` ("+1.0%", or None from 0).
    tables: dict[str, dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"trend": {"compared_with": self.compared_with
                          or "no earlier green run of this target", "tables": self.tables}}


@dataclass(frozen=True)
class ServerEvidence:
    """preflight: the database server that answered (Allure's environment names it)."""

    ROLE: ClassVar[str] = "preflight.server"
    server_version: str | None
    server_version_num: int | None
    database: str | None
    #: Contract tables and columns the database lacks.
    missing: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, evidence: dict[str, Any]) -> ServerEvidence:
        version, num, database = (evidence.get(k) for k in (
            "server_version", "server_version_num", "database"))
        return cls(version if isinstance(version, str) else None,
                   num if isinstance(num, int) and not isinstance(num, bool) else None,
                   database if isinstance(database, str) else None,
                   [str(m) for m in _list(evidence.get("missing"))])

    def as_json(self) -> dict[str, Any]:
        return {"server_version": self.server_version,
                "server_version_num": self.server_version_num, "database": self.database,
                "missing": self.missing}


#: Roles of tests whose outcome the drill record lists among parity's key checks, with
#: the words it uses (the role, not the test's name, is what the record looks for).
PARITY_KEY_ROLES: tuple[tuple[str, str], ...] = (
    ("parity.counts", "nodes/edges counts aligned"),
    ("parity.domains", "domains aligned"),
    ("parity.build_notes", "build/notes node counts aligned"),
    ("parity.endpoints", "edge endpoint integrity valid"),
    ("parity.overview", "admin overview counts aligned"),
    ("parity.shape", "response shape valid"),
)

#: Every role a report reads: each is carried by exactly one runbook test (self-tested).
REPORT_ROLES: tuple[str, ...] = (
    DrillEvidence.ROLE, BlobParityEvidence.ROLE, HealthCounts.ROLE, ServerEvidence.ROLE,
    *(role for role, _ in PARITY_KEY_ROLES),
)
