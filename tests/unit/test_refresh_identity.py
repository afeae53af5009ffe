"""How the refresh tells its target from its source, and production from local."""

from __future__ import annotations

import pytest

from opsgate.errors import ConfigError
from opsgate.refresh.identity import (
    Endpoint,
    ServerIdentity,
    endpoint_of,
    production_signs,
    same_database,
)
from opsgate.sensitive import SecretUrl


def ep(url: str) -> Endpoint:
    return endpoint_of(SecretUrl(url), "DATABASE_URL")


def test_endpoint_names_host_port_database_and_never_the_password() -> None:
    e = ep("postgresql://app:pw-123@Ep-Cool-1-Pooler.eu.aws.neon.tech/neondb?sslmode=require")
    assert e.name == "ep-cool-1-pooler.eu.aws.neon.tech:5432/neondb"
    assert e.base_host == "ep-cool-1.eu.aws.neon.tech"
    assert "pw-123" not in repr(e)


def test_a_malformed_url_is_a_configuration_error_without_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        ep("postgresql://app:pw-123@host:notaport/db x=")
    assert "pw-123" not in str(info.value)


@pytest.mark.parametrize(("url", "env", "needle"), [
    ("postgresql://a:b@ep-x.eu.aws.neon.tech/neondb", {}, "managed Neon endpoint"),
    ("postgresql://a:b@ep-x-pooler.example.com/db", {}, "transaction pooler"),
    ("postgresql://a:b@127.0.0.1:5432/app", {"VERCEL_ENV": "production"},
     "VERCEL_ENV=production"),
    ("postgresql://a:b@db.internal/app",
     {"VERCEL_URL": "app.vercel.app", "ADMIN_STORAGE_BACKEND": "neon"}, "deployment"),
])
def test_production_signs(url: str, env: dict[str, str], needle: str) -> None:
    signs = production_signs(ep(url), env, pooled=False)
    assert any(needle in s for s in signs), signs


def test_a_local_database_shows_no_sign() -> None:
    assert production_signs(ep("postgresql://a:b@127.0.0.1:5432/app"),
                            {"VERCEL_ENV": "development"}, pooled=False) == []
    assert production_signs(ep("postgresql://a:b@127.0.0.1:5432/app"), {}, pooled=True)


def ident(sysid: str | None, db: str, addr: str | None = "10.0.0.1", port: int = 5432
          ) -> ServerIdentity:
    return ServerIdentity(sysid, db, addr, port, 170000)


def test_same_database_by_url_by_cluster_or_by_address() -> None:
    a, b = ep("postgresql://u:p@localhost:5432/app"), ep("postgresql://u:p@127.0.0.1:5432/app")
    pooled, direct = (ep("postgresql://u:p@ep-x-pooler.neon.tech/db"),
                      ep("postgresql://u:p@ep-x.neon.tech/db"))
    assert same_database(ident("1", "db"), ident("2", "db"), pooled, direct)
    assert "system identifier" in (same_database(ident("7", "app"), ident("7", "app"), a, b)
                                   or "")
    assert "same address" in (same_database(ident(None, "app"), ident(None, "app"), a, b)
                              or "")
    # Another database on the same cluster, or another cluster: not the source.
    assert same_database(ident("7", "app"), ident("7", "mirror"), a,
                         ep("postgresql://u:p@127.0.0.1:5432/mirror")) is None
    assert same_database(ident("7", "app"), ident("8", "app", "10.0.0.2"), a, b) is None
