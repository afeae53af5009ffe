"""``opsgate refresh`` from production's topology: the sandbox's ``neon`` profile (TLS
only, an owner that is not a superuser, PgBouncer in transaction mode) as the source."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from psycopg import sql

from opsgate.sandbox import Sandbox
from tests.gate_helpers import ROOT, clean_env
from tests.migration_helpers import db_fingerprint

pytestmark = pytest.mark.pgbouncer


@pytest.fixture(scope="module")
def neon() -> Iterator[Sandbox]:
    with Sandbox.start(profile="neon") as sb:
        yield sb


def _with_db(url: str, dbname: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + dbname, p.query, p.fragment))


@pytest.fixture
def mirror(neon: Sandbox) -> Iterator[tuple[str, str]]:
    """(direct URL, pooled URL) of a fresh database owned by the owner role."""
    assert neon.pg is not None and neon.neon is not None
    name = "mirror_" + uuid.uuid4().hex[:8]
    with neon.pg.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(neon.neon.owner)))
    env = neon.environ()
    yield (_with_db(env["DATABASE_URL_UNPOOLED"], name), _with_db(env["DATABASE_URL"], name))
    with neon.pg.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def refresh(neon: Sandbox, tmp_path: Path, source: Path, **target: str
            ) -> tuple[int, dict[str, Any], str]:
    t = tmp_path / f"t-{uuid.uuid4().hex[:6]}.env"
    t.write_text("".join(f'{k}="{v}"\n' for k, v in target.items()))
    p = subprocess.run(
        [sys.executable, "-m", "opsgate.cli", "refresh", f"--source-env-file={source}",
         f"--target-env-file={t}", f"--out={tmp_path / uuid.uuid4().hex[:6]}", "--json",
         "--apply"],
        capture_output=True, text=True, cwd=ROOT, env=clean_env(), timeout=300)
    assert neon.environ()["PGPASSWORD"] not in p.stdout + p.stderr
    return p.returncode, json.loads(p.stdout), p.stderr


def test_refresh_from_a_neon_shaped_source_over_tls(
        neon: Sandbox, mirror: tuple[str, str], tmp_path: Path) -> None:
    direct, pooled = mirror
    env = neon.environ()
    before = db_fingerprint(env["DATABASE_URL_UNPOOLED"])
    bindir = env["OPSGATE_PG_BINDIR"]
    code, summary, err = refresh(neon, tmp_path, neon.env_file, DATABASE_URL=direct,
                                 OPSGATE_PG_BINDIR=bindir)
    assert code == 0 and summary["status"] == "applied", err
    assert all(r["match"] for r in summary["tables"])
    assert summary["source"]["database"].startswith("postgresql://neondb_owner:***@")
    assert db_fingerprint(env["DATABASE_URL_UNPOOLED"]) == before

    # The pooled endpoint of a database is refused as a target: that is how the
    # deployed app reaches production.
    code, summary, _ = refresh(neon, tmp_path, neon.env_file, DATABASE_URL=pooled,
                               DATABASE_URL_UNPOOLED=direct, OPSGATE_DATABASE_POOLED="true",
                               OPSGATE_PG_BINDIR=bindir)
    assert code == 1 and summary["status"] == "refused"
    assert "transaction pooler" in summary["message"]


def test_a_source_given_only_its_pooled_url_names_the_variable(
        neon: Sandbox, mirror: tuple[str, str], tmp_path: Path) -> None:
    src = {k: v for k, v in neon.environ().items()
           if k not in ("DATABASE_URL_UNPOOLED", "POSTGRES_URL_NON_POOLING")}
    source = tmp_path / "pooled-only.env"
    source.write_text("".join(f'{k}="{v}"\n' for k, v in src.items()))
    code, summary, err = refresh(neon, tmp_path, source, DATABASE_URL=mirror[0])
    assert code == 2 and "DATABASE_URL_UNPOOLED" in summary["message"], err
