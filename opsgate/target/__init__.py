"""Talking to the target: database sessions, HTTP, blob store, PostgreSQL tools, contract."""
