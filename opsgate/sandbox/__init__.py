"""The self-contained target: embedded PostgreSQL, the Neon topology, reference app, blob.

The names below load on first use (PEP 562): users of `embedded` alone then skip the
app, its web server and the data generator, about 0.14 s per process.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opsgate.sandbox._sandbox import (
        BACKFILL_MIGRATION,
        BLOB_STATE_MIGRATION,
        FIXTURE_EXPECTATIONS,
        FIXTURE_PAYLOAD,
        MIGRATIONS_DIR,
        PROFILES,
        Sandbox,
    )

__all__ = ["BACKFILL_MIGRATION", "BLOB_STATE_MIGRATION", "FIXTURE_EXPECTATIONS",
           "FIXTURE_PAYLOAD", "MIGRATIONS_DIR", "PROFILES", "Sandbox"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("opsgate.sandbox._sandbox"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
