"""opsgate's HTTP clients share one TLS context per trust setting (httpx would load the
CA bundle again for each), and a changed SSL_CERT_FILE still takes effect."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import pytest

from opsgate.clients import web


def _context(client: object) -> ssl.SSLContext:
    context = client._transport._pool._ssl_context  # type: ignore[attr-defined]
    assert isinstance(context, ssl.SSLContext)
    return context


def test_clients_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with web.client("https://example.invalid") as a, web.client() as b:
        assert _context(a) is _context(b)
        assert _context(a).verify_mode == ssl.CERT_REQUIRED and _context(a).check_hostname


def test_ssl_cert_file_still_chooses_the_trusted_roots(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    """httpx reads SSL_CERT_FILE when it builds a context: a client made after the
    variable changed trusts exactly that file's roots."""
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with web.client() as default:
        roots = len(_context(default).get_ca_certs())
    one = tmp_path / "one-root.pem"
    pem = Path(certifi.where()).read_text()
    end = "-----END CERTIFICATE-----"
    one.write_text(pem[pem.index("-----BEGIN CERTIFICATE-----"):pem.index(end) + len(end)] + "\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(one))
    with web.client() as narrowed:
        assert _context(narrowed) is not _context(default)
        assert len(_context(narrowed).get_ca_certs()) == 1 < roots
