"""pg_dump and pg_restore for the refresh, run through `opsgate.clients.pgrun` (passwords
off every command line; the drill's restore policy for newer archives).

Archives are PostgreSQL's custom format: one file each, so its SHA-256 identifies it
in the summary and in the ledger.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsgate.clients import pgrun
from opsgate.clients.pgtools import PgBinaries
from opsgate.refresh.errors import RefreshError
from opsgate.sensitive import SecretUrl


@dataclass(frozen=True)
class Archive:
    path: Path
    bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, "sha256": self.sha256,
                "format": "custom"}


def _env(url: SecretUrl, *, read_only: bool) -> dict[str, str]:
    """The tool's environment (`pgrun.tool_env`), its sessions named opsgate-refresh
    (the stop handling finds them by that name)."""
    return pgrun.tool_env(url, app_name=REFRESH_APP_NAME, read_only=read_only)


#: application_name of the refresh's own pg_dump, pg_restore and psql sessions.
REFRESH_APP_NAME = "opsgate-refresh"


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def export(tools: PgBinaries, url: SecretUrl, path: Path, what: str,
           redact: Callable[[str], str], snapshot: str | None = None) -> Archive:
    """``pg_dump`` the whole database into ``path`` (never overwritten), read only."""
    if path.exists():
        raise RefreshError(f"{path} already exists; a refresh never overwrites an archive")
    # Made 0600 before pg_dump writes into it (a database's data, readable by no one
    # else, not even for a moment: pg_dump would create it by the umask).
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    args = [str(tools.tool("pg_dump")), "--format=custom", f"--file={path}",
            f"--dbname={url.without_password}"]
    if snapshot:
        args.insert(2, f"--snapshot={snapshot}")
    pgrun.run_tool(args, f"pg_dump of the {what}", _env(url, read_only=True), redact,
                   RefreshError)
    return Archive(path, path.stat().st_size, sha256_of(path))


def restore(tools: PgBinaries, archive: Archive, url: SecretUrl, server_major: int,
            redact: Callable[[str], str]) -> str:
    """Replace the target's objects with the archive's, all or nothing: one transaction
    (``--single-transaction``), objects dropped first (``--clean --if-exists``), owners
    and grants left to the target (``--no-owner --no-privileges``). Newer tools into an
    older server go through psql (`pgrun.restore_archive`); returns how."""
    if sha256_of(archive.path) != archive.sha256:
        raise RefreshError(f"{archive.path} changed since it was exported (sha256 "
                           f"{archive.sha256[:12]}…); nothing was restored")
    return pgrun.restore_archive(
        tools, archive.path, url, server_major,
        "pg_restore into the target (one transaction: the target is unchanged)", redact,
        RefreshError, app_name=REFRESH_APP_NAME,
        options=("--clean", "--if-exists", "--no-owner", "--no-privileges",
                 "--single-transaction"))
