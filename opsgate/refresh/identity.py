"""Which database a URL names, and whether a refresh target looks like production.

A refresh writes its target, so the target must be told apart from the source even when
the two URLs are spelled differently (``localhost`` and ``127.0.0.1``, the pooled and
the direct endpoint of one Neon database): the server is asked who it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from opsgate.clients.db import is_pooler_host
from opsgate.errors import ConfigError
from opsgate.refresh.errors import RefreshError
from opsgate.sensitive import SecretUrl

#: Host suffixes of managed production databases (Neon, reached through Vercel).
PRODUCTION_HOST_SUFFIXES = (".neon.tech",)


@dataclass(frozen=True)
class Endpoint:
    """Host, port and database as the URL names them (no user, no password)."""

    host: str
    port: str
    dbname: str

    @property
    def name(self) -> str:
        """What ``--approve-target`` must repeat to approve this target."""
        return f"{self.host or 'local-socket'}:{self.port}/{self.dbname}"

    @property
    def base_host(self) -> str:
        """The host with Neon's ``-pooler`` suffix taken off its first label, so the
        pooled and the direct endpoint of one database compare equal."""
        first, dot, rest = self.host.partition(".")
        return first.removesuffix("-pooler") + dot + rest


def endpoint_of(url: SecretUrl, variable: str) -> Endpoint:
    try:
        params = conninfo_to_dict(url.reveal())
    except psycopg.ProgrammingError:
        raise ConfigError(f"{variable} {url.masked} is not a valid connection URL") from None
    host = str(params.get("host") or "").lower()
    return Endpoint(host, str(params.get("port") or "5432"),
                    str(params.get("dbname") or params.get("user") or ""))


def production_signs(endpoint: Endpoint, env: Mapping[str, str], pooled: bool) -> list[str]:
    """Why a target looks like production; empty when nothing does."""
    signs = []
    if any(endpoint.host.endswith(s) for s in PRODUCTION_HOST_SUFFIXES):
        signs.append(f"its host {endpoint.host} is a managed Neon endpoint")
    if is_pooler_host(f"postgresql://{endpoint.host}/") or pooled:
        signs.append("its DATABASE_URL is a transaction pooler (how the deployed app "
                     "reaches Neon)")
    if env.get("VERCEL_ENV", "").strip().lower() == "production":
        signs.append("its env file says VERCEL_ENV=production")
    if env.get("ADMIN_STORAGE_BACKEND", "").strip().lower() == "neon" and env.get(
            "VERCEL_URL", "").strip():
        signs.append("its env file is a deployment's (VERCEL_URL with "
                     "ADMIN_STORAGE_BACKEND=neon)")
    return signs


@dataclass(frozen=True)
class ServerIdentity:
    """Who the server says it is. ``system_identifier`` is unique per cluster (initdb);
    it is None where the role may not read it."""

    system_identifier: str | None
    dbname: str
    address: str | None
    port: int | None
    server_version: int

    def as_dict(self) -> dict[str, Any]:
        return {"system_identifier": self.system_identifier, "database": self.dbname,
                "server_address": self.address, "server_port": self.port,
                "server_version": self.server_version}


def server_identity(conn: psycopg.Connection[Any]) -> ServerIdentity:
    """Read inside the caller's (read-only) transaction."""
    row = conn.execute(
        "SELECT current_database(), host(inet_server_addr()), inet_server_port(), "
        "current_setting('server_version_num')::int, "
        "has_function_privilege('pg_control_system()', 'EXECUTE')").fetchone()
    if row is None:  # a SELECT without FROM returns one row; checked, not assumed
        raise RefreshError("the server did not say which database it is; nothing was "
                           "exported and neither database was written")
    dbname, address, port, version, may_read = row
    sysid = None
    if may_read:
        got = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
        sysid = got[0] if got else None
    return ServerIdentity(sysid, dbname, address, port, int(version))


def same_database(a: ServerIdentity, b: ServerIdentity, ea: Endpoint, eb: Endpoint
                  ) -> str | None:
    """Why ``a`` and ``b`` are one database, or None. Errs towards "the same": a
    refresh refused by mistake costs a second look; a wrong "different" costs production."""
    if (ea.base_host, ea.port, ea.dbname) == (eb.base_host, eb.port, eb.dbname):
        return f"both URLs name {ea.name}"
    if a.dbname != b.dbname:
        return None
    if a.system_identifier and a.system_identifier == b.system_identifier and (
            (a.address, a.port) == (b.address, b.port)):
        return (f"the server reports the same cluster (system identifier "
                f"{a.system_identifier}), address and database {a.dbname}")
    if not (a.system_identifier and b.system_identifier) and a.address and (
            (a.address, a.port) == (b.address, b.port)):
        return f"the server reports the same address {a.address}:{a.port} and database {a.dbname}"
    return None
