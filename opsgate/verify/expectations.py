"""Expected production markers (runbook: "verify expected production markers").

A gate that compares two empty things passes vacuously: the reference API reads the
same empty database the checks read, so 0 nodes equals 0 nodes. The expectations say
what a healthy target must hold, independently of what it holds now:

- ``[floors]``: the least number of rows per contract table;
- ``[graph] required_domains``: domains the knowledge graph must have;
- ``[ledger] required_migrations``: migrations that must be applied;
- ``[pinned]``: canon-v1 hashes that must not change (``kb_graph_sha256``,
  ``admin_state_sha256``), for a release that must not touch the data;
- ``[health] max_shrink``: the fraction a table may lose since the last green run.

The file is TOML (``tomllib``, no dependency) named by ``OPSGATE_EXPECTATIONS_FILE``.
With no file, `DEFAULT_FLOORS` still hold: an empty graph is never green.

Each expectation is judged by exactly one check of the gate, so one fault is one red
check, not the same sentence in three (docs/checks.md, "Which check owns which fact"):
the floors by preflight, except the ledger table's (`FLOOR_OWNERS`), which the ledger
check judges with the migrations it holds; the domains by preflight; the required
migrations by the ledger check; the pinned hashes by knowledge_drift and blob_fallback;
``max_shrink`` by health. (`opsgate refresh` checks them all on its source: it is no
gate check, and it runs alone.)
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsgate.clients.schema import CONTRACT_TABLES
from opsgate.errors import ConfigError

__all__ = ["DEFAULT_FLOORS", "DEFAULT_MAX_SHRINK", "FLOOR_OWNERS", "Expectations"]

#: Tables that are never legitimately empty on a live deployment, and their floor.
DEFAULT_FLOORS: Mapping[str, int] = {
    "admin_content_state": 1, "admin_migrations": 1, "kb_entities": 1, "kb_edges": 1,
}
DEFAULT_MAX_SHRINK = 0.5
#: Tables whose floor a check other than preflight judges: the ledger check owns the
#: ledger, so a lost migration row is one red check, naming the migration.
FLOOR_OWNERS: Mapping[str, str] = {"admin_migrations": "ledger"}
FLOOR_DEFAULT_OWNER = "preflight"
PINNABLE = ("kb_graph_sha256", "admin_state_sha256")
_SECTIONS: Mapping[str, frozenset[str]] = {
    "floors": frozenset(CONTRACT_TABLES),
    "graph": frozenset({"required_domains"}),
    "ledger": frozenset({"required_migrations"}),
    "pinned": frozenset(PINNABLE),
    "health": frozenset({"max_shrink"}),
}
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Expectations:
    floors: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_FLOORS))
    required_domains: tuple[str, ...] = ()
    required_migrations: tuple[str, ...] = ()
    pinned: Mapping[str, str] = field(default_factory=dict)
    max_shrink: float = DEFAULT_MAX_SHRINK
    source: str = "built-in floors (no OPSGATE_EXPECTATIONS_FILE)"

    @classmethod
    def load(cls, path: str | Path | None) -> Expectations:
        """The file's expectations, or the defaults when ``path`` is None. A bad file is
        a configuration error naming the file and the key, and nothing runs."""
        if path is None:
            return cls()
        p = Path(path)
        where = f"OPSGATE_EXPECTATIONS_FILE {p}"
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot be read ({exc.__class__.__name__})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML ({exc})") from None
        return cls.from_dict(doc, where)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> Expectations:
        for section, body in doc.items():
            allowed = _SECTIONS.get(section)
            if allowed is None:
                raise ConfigError(f"{where}: unknown section [{section}]; known: "
                                  + ", ".join(_SECTIONS))
            if not isinstance(body, dict):
                raise ConfigError(f"{where}: [{section}] must be a table")
            for key in body:
                if key not in allowed:
                    raise ConfigError(f"{where}: unknown key {key!r} in [{section}]")
        floors = dict(DEFAULT_FLOORS)
        for table, n in doc.get("floors", {}).items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ConfigError(f"{where}: [floors] {table} must be a whole number >= 0")
            floors[table] = n
        graph, ledger = doc.get("graph", {}), doc.get("ledger", {})
        domains = _strings(graph.get("required_domains", []), where, "graph.required_domains")
        migrations = _strings(ledger.get("required_migrations", []), where,
                              "ledger.required_migrations")
        pinned = {}
        for name, value in doc.get("pinned", {}).items():
            if not isinstance(value, str) or not _HEX64.fullmatch(value):
                raise ConfigError(f"{where}: [pinned] {name} must be 64 lowercase hex digits")
            pinned[name] = value
        shrink = doc.get("health", {}).get("max_shrink", DEFAULT_MAX_SHRINK)
        if isinstance(shrink, bool) or not isinstance(shrink, int | float) or not (
                0 <= shrink <= 1):
            raise ConfigError(f"{where}: [health] max_shrink must be a fraction from 0 to 1")
        return cls(floors, domains, migrations, pinned, float(shrink), where)

    def floors_judged_by(self, check: str) -> dict[str, int]:
        """The floors ``check`` (a marker) judges, and no other check does."""
        return {t: n for t, n in self.floors.items()
                if FLOOR_OWNERS.get(t, FLOOR_DEFAULT_OWNER) == check}

    def floor_problems(self, counts: Mapping[str, int | None],
                       check: str | None = None) -> list[str]:
        """One line per table below its floor, with both numbers: the floors ``check``
        judges, or every floor when no check is named (a refresh's source)."""
        floors = self.floors if check is None else self.floors_judged_by(check)
        out = []
        for table, floor in floors.items():
            n = counts.get(table)
            if n is None:
                out.append(f"{table} is missing (expected at least {floor} rows)")
            elif n < floor:
                out.append(f"{table} has {n} rows, expected at least {floor}")
        return out

    def as_evidence(self) -> dict[str, Any]:
        return {"source": self.source, "floors": dict(self.floors),
                "required_domains": list(self.required_domains),
                "required_migrations": list(self.required_migrations),
                "pinned": dict(self.pinned), "max_shrink": self.max_shrink}


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key} must be a list of non-empty strings")
    return tuple(value)
