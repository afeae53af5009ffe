"""A migration script reaches the run's settings through what it builds, not only
through ``ctx.settings``: a released script's blob store (migration 1002 makes one
without a time-out) waits what ``OPSGATE_HTTP_TIMEOUT`` of the env file says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.migration_helpers import cli

SCRIPT = '''
from opsgate.blob import VercelBlobStore
from opsgate.migrate.api import Plan
from opsgate.sensitive import Secret

SOURCE, TARGET, DESCRIPTION, TARGET_TABLES = "none", "neon", "probe", ()


def plan(ctx):
    return Plan(payload={})


def preconditions(ctx):
    store = VercelBlobStore(Secret("t"), "https://blob.example")  # as 1002 makes it
    return [f"blob store waits {store._client.timeout.read:g} s"]


def apply(ctx, plan):
    pass


def verify(ctx, plan):
    return []
'''


def test_a_scripts_blob_store_waits_the_env_files_time_out(
        fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPSGATE_HTTP_TIMEOUT", raising=False)
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "20260301_9001_none_to_neon_probe.py").write_text(SCRIPT)
    env_file = tmp_path / "target.env"
    env_file.write_text("OPSGATE_HTTP_TIMEOUT=7\n")
    code, summary, _ = cli(fresh_db, "--env-file", str(env_file), "run",
                           "20260301_9001_none_to_neon_probe", migrations=folder)
    assert code == 1 and summary["preconditions"] == ["blob store waits 7 s"]
    assert summary["migrations_dir"] == str(folder)
    code, summary, _ = cli(fresh_db, "run", "20260301_9001_none_to_neon_probe",
                           migrations=folder)
    assert summary["preconditions"] == ["blob store waits 15 s"]
