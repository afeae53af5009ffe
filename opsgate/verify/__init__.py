"""Verification engines: canon-v1 hashing, drift, drill, row diff, parity, expectations."""
