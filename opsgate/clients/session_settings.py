"""The session settings opsgate pins in every transaction, apart from the driver: canon-v1
depends on them (`opsgate.verify.canon`), and the payload side of drift, which runs
without a database driver, imports canon."""

from __future__ import annotations

#: Settings that decide how values come back as text: pinned in every opsgate
#: transaction, so a role or database whose defaults differ reads the same bytes
#: (canon-v1 depends on them; docs/canonical-hashing.md).
OUTPUT_SETTINGS: tuple[tuple[str, str], ...] = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
)
