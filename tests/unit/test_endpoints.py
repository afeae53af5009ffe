"""Pooled and direct endpoints, as Vercel's Neon integration writes them."""

from __future__ import annotations

import pytest

from opsgate.clients import db
from opsgate.clients.pgtools import url_wants_tls
from opsgate.config import Settings
from opsgate.errors import MissingEnvError, SessionEndpointError

POOLED = ("postgresql://neondb_owner:npg_s3cret@ep-cool-darkness-123456-pooler.us-east-2"
          ".aws.neon.tech/neondb?sslmode=require&channel_binding=require")
DIRECT = ("postgresql://neondb_owner:npg_s3cret@ep-cool-darkness-123456.us-east-2"
          ".aws.neon.tech/neondb?sslmode=require&channel_binding=require")


@pytest.mark.parametrize(("url", "pooled"), [
    (POOLED, True),
    (DIRECT, False),
    ("host=ep-x-1-pooler.eu-central-1.aws.neon.tech dbname=neondb sslmode=require", True),
    ("postgresql://u@127.0.0.1:6432/app", False),
    ("postgresql://u@/app?host=/var/run/postgresql", False),
    ("not a url at all", False),
])
def test_a_neon_pooler_is_recognised_by_its_host(url: str, pooled: bool) -> None:
    assert db.is_pooler_host(url) is pooled


def test_vercel_shaped_env_uses_the_direct_endpoint_for_sessions() -> None:
    s = Settings.load(environ={"DATABASE_URL": POOLED, "DATABASE_URL_UNPOOLED": DIRECT})
    assert s.database_url_pooled
    assert s.session_url("the drill").reveal() == DIRECT
    assert s.require_database_url().reveal() == POOLED  # checks may use either


def test_postgres_url_non_pooling_is_the_fallback_name() -> None:
    s = Settings.load(environ={"POSTGRES_URL": POOLED, "POSTGRES_URL_NON_POOLING": DIRECT})
    assert s.database_url_unpooled_variable == "POSTGRES_URL_NON_POOLING"
    assert s.session_url("x").reveal() == DIRECT


def test_pooled_only_session_work_fails_in_one_line_naming_the_variable() -> None:
    s = Settings.load(environ={"DATABASE_URL": POOLED})
    with pytest.raises(SessionEndpointError) as info:
        s.session_url("the backup/restore drill")
    msg = str(info.value)
    assert "\n" not in msg and "DATABASE_URL_UNPOOLED" in msg and "the backup/restore drill" in msg
    assert "npg_s3cret" not in msg


def test_a_pooler_can_be_declared_when_its_host_does_not_say_so() -> None:
    url = "postgresql://u:p@127.0.0.1:6432/app"
    assert Settings.load(environ={"DATABASE_URL": url}).session_url("x").reveal() == url
    declared = Settings.load(environ={"DATABASE_URL": url, "OPSGATE_DATABASE_POOLED": "true"})
    with pytest.raises(SessionEndpointError, match="OPSGATE_DATABASE_POOLED"):
        declared.session_url("a migration")


def test_no_database_at_all_names_database_url() -> None:
    with pytest.raises(MissingEnvError, match="DATABASE_URL"):
        Settings.load(environ={}).session_url("x")


def test_direct_password_is_redacted_and_target_shows_both_masked() -> None:
    s = Settings.load(environ={"DATABASE_URL": POOLED, "DATABASE_URL_UNPOOLED": DIRECT})
    assert s.redactor()(f"boom {DIRECT}") == "boom ***"
    ident = s.target_identity()
    assert ident["database_pooled"] is True
    assert "npg_s3cret" not in str(ident) and "***" in str(ident["database_direct"])


@pytest.mark.parametrize(("url", "tls"), [
    (DIRECT, True),
    ("postgresql://u@h/d?sslmode=verify-full", True),
    ("postgresql://u@h/d?sslmode=prefer", False),
    ("postgresql://u@h/d", False),
    ("host=h sslmode=require", True),
])
def test_tls_is_required_when_libpq_would_insist(url: str, tls: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGSSLMODE", raising=False)
    assert url_wants_tls(url) is tls


@pytest.mark.parametrize("raw", ["-1", "soon"])
def test_statement_timeout_must_be_seconds(raw: str) -> None:
    from opsgate.errors import ConfigError

    with pytest.raises(ConfigError, match="OPSGATE_STATEMENT_TIMEOUT"):
        Settings.load(environ={"OPSGATE_STATEMENT_TIMEOUT": raw})
    assert Settings.load(environ={"OPSGATE_STATEMENT_TIMEOUT": "0"}).statement_timeout == 0


#: Migration scripts released and applied: their checksums are in production ledgers, so
#: no refactoring may touch them (the old module names they import stay valid through
#: opsgate._legacy). A new script joins this list once it is released.
FROZEN_SCRIPTS = {
    "20260210_1001_none_to_neon_admin_schema":
        "c1681e4114a8161bc17b86878bfcabc2a81dcfb7c95fc46788fde2a64b6f24f1",
    "20260211_1002_blob_to_neon_admin_state":
        "fd4e0151c9c188464759a1be910e4771c92b79bac1e6cdfb663fa736255ee0b3",
    "20260212_1003_none_to_neon_kb_schema":
        "a68fd0fc96fc666c7e1dd9bb468d7401f9732770996bd83c5098bfc6cd20cd69",
    "20260213_1004_legacy_to_neon_kb_backfill":
        "9b887566c54d0395a7dddeb1b2094e1a50cea8287340fe8405db7426b51a805f",
}


def test_released_migration_scripts_are_never_edited() -> None:
    from opsgate import resources
    from opsgate.migrate.scripts import discover_scripts

    found = {s.name: s.checksum for s in discover_scripts(resources.migrations_dir())}
    assert {n: found.get(n) for n in FROZEN_SCRIPTS} == FROZEN_SCRIPTS


def test_the_old_module_names_of_released_scripts_still_import() -> None:
    import importlib

    from opsgate._legacy import ALIASES

    for old, new in ALIASES.items():
        assert importlib.import_module(old) is importlib.import_module(new)
