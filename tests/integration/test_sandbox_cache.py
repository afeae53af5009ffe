"""A fixture-scale sandbox starts from a cached copy of one migrated by the runner, and
only from a copy of the same migrations, fixtures, code and server."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from opsgate.sandbox import Sandbox
from opsgate.sandbox._sandbox import MIGRATIONS_DIR
from opsgate.sandbox.embedded import EmbeddedPostgres


def _ledger(sb: Sandbox) -> list[tuple[str, str]]:
    with psycopg.connect(sb.environ()["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT name, started_at::text FROM admin_migrations "
                            "ORDER BY id").fetchall()
    return [(str(a), str(b)) for a, b in rows]


def test_the_second_sandbox_is_a_copy_of_the_first(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSGATE_CACHE_DIR", str(tmp_path / "cache"))
    with Sandbox.start() as first:
        built = _ledger(first)
        first_password = first.pg.url().password if first.pg else None
    assert len(built) >= 5
    saved = sorted(p.name for p in (tmp_path / "cache" / "sandboxes").iterdir())
    assert len(saved) == 2 and saved[1] == saved[0] + ".json"
    with Sandbox.start() as second:
        # The same ledger rows, timestamps included: migrated once, copied since.
        assert _ledger(second) == built
        assert second.migrations and [m["migration"] for m in second.migrations] == [
            name for name, _ in built]
        assert second.pg is not None and second.pg.url().password != first_password


def test_a_changed_migration_a_scale_or_no_cache_is_never_served_a_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSGATE_CACHE_DIR", str(tmp_path / "cache"))
    sandbox = Sandbox(tmp_path / "sb")
    sandbox.pg = EmbeddedPostgres()
    key = sandbox._seeded_template(None, MIGRATIONS_DIR, existing=False)
    changed = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, changed)
    last = sorted(changed.glob("*.py"))[-1]
    last.write_text(last.read_text() + "\n# changed\n")
    assert key is not None
    assert sandbox._seeded_template(None, changed, existing=False) not in (None, key)
    assert sandbox._seeded_template(1000, MIGRATIONS_DIR, existing=False) is None
    monkeypatch.setenv("OPSGATE_CACHE_DIR", "off")
    assert sandbox._seeded_template(None, MIGRATIONS_DIR, existing=False) is None
