"""A sandbox started from the cache is what it says: every migration re-applied is a
no-op, and the times it shows are its own start's, not its template's."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from opsgate.migrate.scripts import discover_scripts
from opsgate.sandbox import Sandbox
from opsgate.sandbox._sandbox import MIGRATIONS_DIR
from tests.migration_helpers import cli, ledger_rows

REFRESH = "20261126_1006_neon_to_blob_admin_fallback_refresh"


@dataclass
class Cache:
    """A cache of this module's own (written to, so never the shared one), holding the
    template of one sandbox built in it, and what that build wrote."""

    path: Path
    written: dict[str, int]


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPSGATE_CACHE_DIR", str(path))
        start = datetime.now(UTC)
        with Sandbox.start() as fresh:
            written = _build_times(fresh.environ()["DATABASE_URL"], start)
        assert list((path / "sandboxes").glob("*.json")), "no template was saved"
        time.sleep(1.5)  # the template is now clearly older than the next sandbox
        yield Cache(path, written)


def _reapply_all(sb: Sandbox) -> list[str]:
    """Every migration applied again through the real runner (`opsgate migrate run NAME
    --apply`): what was not a no-op, one line each."""
    url = sb.environ()["DATABASE_URL"]
    before = len(ledger_rows(url))
    problems = []
    for script in discover_scripts(MIGRATIONS_DIR):
        code, out, err = cli(url, "--env-file", str(sb.env_file), "run", script.name,
                             "--apply")
        status = out.get("status") if isinstance(out, dict) else out
        if code != 0 or status != "noop" or "nothing to do" not in err:
            problems.append(f"{script.name}: exit {code}, status {status}: "
                            f"{(err.strip().splitlines() or ['-'])[-1]}")
    after = len(ledger_rows(url))
    if after != before:
        problems.append(f"the ledger grew from {before} to {after} rows")
    return problems


def test_every_migration_is_a_noop_right_after_a_start_from_the_cache(
        warm_cache: Cache) -> None:
    start = datetime.now(UTC)
    with Sandbox.start() as copied:
        # A copy indeed: its first ledger row was written before this start.
        rows = ledger_rows(copied.environ()["DATABASE_URL"])
        assert rows and rows[0]["started_at"] < start
        assert _reapply_all(copied) == []


def test_two_sandboxes_from_the_cache_at_once_are_each_their_own(warm_cache: Cache) -> None:
    """The blob server of a sandbox from the cache takes the template's port, so that the
    ledger's blob refresh names its very store; the second of two running at once
    cannot, and has the refresh applied to its own store at its start."""
    template_port = json.loads(
        next((warm_cache.path / "sandboxes").glob("*.json")).read_text())["blob_port"]
    start = datetime.now(UTC)
    with Sandbox.start() as one, Sandbox.start() as two:
        assert one.blob is not None and two.blob is not None
        assert one.blob.port != two.blob.port
        for sb, port in ((one, one.blob.port), (two, two.blob.port)):
            refreshed = [r for r in ledger_rows(sb.environ()["DATABASE_URL"])
                         if r["name"] == REFRESH and r["started_at"] >= start]
            assert len(refreshed) == (port != template_port), port
            assert [m["migration"] for m in sb.migrations] == [
                s.name for s in discover_scripts(MIGRATIONS_DIR)]
            # One ledger row per migration, as a fresh build has: the template's row for
            # a store at another address is not this sandbox's (a seventh row made the
            # ledger floor test depend on which module's sandbox got the port).
            assert sorted(r["name"] for r in ledger_rows(sb.environ()["DATABASE_URL"])) == \
                sorted(s.name for s in discover_scripts(MIGRATIONS_DIR)), port
            assert _reapply_all(sb) == [], f"blob server on {port}"


def _build_times(url: str, since: datetime) -> dict[str, int]:
    """How many values of each ``timestamptz`` column (the ledger's excepted) are at or
    after ``since``: the times a build wrote."""
    counts = {}
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type = 'timestamp with time zone' "
            "AND table_name <> 'admin_migrations' ORDER BY 1, 2").fetchall()
        for table, column in columns:
            row = conn.execute(sql.SQL("SELECT count(*) FILTER (WHERE {c} >= %s) FROM {t}")
                               .format(c=sql.Identifier(column), t=sql.Identifier(table)),
                               (since,)).fetchone()
            counts[f"{table}.{column}"] = int(row[0]) if row else 0
    return counts


def _shown_times(sb: Sandbox) -> dict[str, Any]:
    """The times a user reads through the sandbox's own HTTP APIs."""
    assert sb.api is not None and sb.blob is not None
    meta = httpx.get(sb.api.url + "/api/constellation", timeout=30).json()["metadata"]
    listing = httpx.get(sb.blob.url + "/", params={"prefix": "admin/"}, timeout=30,
                        headers={"authorization": f"Bearer {sb.blob_token.reveal()}"}).json()
    return {"generatedAt": meta["generatedAt"],
            **{b["pathname"]: b["uploadedAt"] for b in listing["blobs"]}}


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_sandbox_from_an_older_cache_shows_its_own_start(warm_cache: Cache) -> None:
    assert warm_cache.written["kb_provenance_runs.finished_at"] > 0, warm_cache.written
    start = datetime.now(UTC)
    with Sandbox.start() as copied:
        # As many times belong to this start as to a fresh build's: none is the template's.
        assert _build_times(copied.environ()["DATABASE_URL"], start) == warm_cache.written
        shown = _shown_times(copied)
        assert len(shown) == 3, shown
        early = {k: v for k, v in shown.items() if _iso(v) < start}
        assert not early, f"times before the sandbox started at {start.isoformat()}: {early}"
        # The ledger keeps the true record: the template's migrations were applied before
        # this start (only the blob refresh may be applied again at it, see below).
        rows = ledger_rows(copied.environ()["DATABASE_URL"])
        assert {r["name"] for r in rows if r["started_at"] >= start} <= {REFRESH}
