"""Throwaway TLS material for local servers that must look like production.

Neon accepts TLS connections only, so a Neon-shaped target needs a server certificate.
`make_tls_files` makes a private CA and a server certificate for the loopback names
with ``trustme``; the CA is kept so that a client can also verify (``sslmode=verify-full``
with ``sslrootcert``), although Neon's own URLs only ask for ``sslmode=require``.
`write_private` writes a key (or any credential file) readable by its owner alone, as
PostgreSQL and PgBouncer insist on, and hands it to the service user they run as.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    """PEM bytes of a server certificate (with its chain), its key, and the issuing CA.

    The key is left out of ``repr`` so that it never reaches a log or a test report.
    """

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    ca_pem: bytes

    def install(
        self, folder: Path, owner: pwd.struct_passwd | None, *, stem: str = "server"
    ) -> tuple[Path, Path]:
        """Write ``<stem>.crt`` and ``<stem>.key`` into ``folder`` (mode 0600, owned by
        ``owner`` when given) and return their paths."""
        cert, key = folder / f"{stem}.crt", folder / f"{stem}.key"
        write_private(cert, self.cert_pem, owner)
        write_private(key, self.key_pem, owner)
        return cert, key


def make_tls_files(hostnames: Sequence[str] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """A fresh CA and a server certificate valid for ``hostnames`` (names or IPs)."""
    # Imported here: only TLS-mode targets need it, plain clusters run without it.
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert(*hostnames)
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return TlsFiles(
        cert_pem=chain, key_pem=leaf.private_key_pem.bytes(), ca_pem=ca.cert_pem.bytes()
    )


def write_private(path: Path, data: bytes, owner: pwd.struct_passwd | None) -> None:
    """Create ``path`` with mode 0600 before any byte is written (no window in which
    another user could open it), give it to ``owner`` and write ``data``. Replaces an
    existing file, whose mode and owner would otherwise be kept."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        if owner is not None:
            os.fchown(f.fileno(), owner.pw_uid, owner.pw_gid)
        f.write(data)
