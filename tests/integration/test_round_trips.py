"""Connections a gate run opens to the database, counted by a proxy in front of it: each
one costs about six round trips (TLS, SCRAM) before its first query, which across a
continent is most of a check's time (`bench.roundtrips` measures it at 50 ms)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench.delayproxy import ProxySet
from opsgate.sandbox import Sandbox
from tests.gate_helpers import clean_env, run_gate_here

pytestmark = pytest.mark.usefixtures("gate_in_process")


def test_checks_share_one_read_only_connection(sandbox: Sandbox, tmp_path: Path) -> None:
    """Three checks, seven tests reading the database: one connection, each test in a
    read-only transaction of its own on it."""
    url = sandbox.environ()["DATABASE_URL"]
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with ProxySet({"db": (parts.hostname, parts.port)}, delay_s=0.0) as proxies:
        proxied = url.replace(f":{parts.port}/", f":{proxies.port('db')}/", 1)
        run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m",
                            "preflight or ledger or health", env=clean_env(DATABASE_URL=proxied))
        counts = proxies.snapshot()["db"]
    assert run.code == 0, run.stdout[-3000:]
    assert counts.connections == 1, (
        f"the run opened {counts.connections} database connections, not 1")
