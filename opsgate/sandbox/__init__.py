"""The self-contained target: embedded PostgreSQL, the Neon topology, reference app, blob."""

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
