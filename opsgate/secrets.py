"""Secret values that never show themselves.

A `Secret` hides its value from ``str``, ``repr``, ``format``, pickling and pytest's
assertion rewriting (which uses ``repr``). The value is only reachable through
``reveal()``, so every place that uses a secret is greppable. `mask_url` hides the
password of a connection URL for headers, reports and error messages.
"""

from __future__ import annotations

from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"


class Secret:
    """A string that does not print. Compare with ``==``; read with ``reveal()``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """The real value, for the one call that needs it (a login, a connection)."""
        return str(object.__getattribute__(self, "_value"))

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self.reveal() == other.reveal()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self.reveal()))

    def __bool__(self) -> bool:
        return bool(self.reveal())

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


def _replace_password(url: str, replacement: str | None) -> str:
    """``url`` with its password (in the userinfo, or a ``password`` query parameter,
    which libpq also accepts) replaced by ``replacement``, or removed when it is None."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        keep = ":" in userinfo and replacement is not None
        netloc = f"{user}:{replacement}@{hostport}" if keep else (
            f"{user}@{hostport}" if user else hostport)
    params = []
    for k, sep, v in (p.partition("=") for p in parts.query.split("&") if p):
        if k.lower() == "password":
            if replacement is not None:
                params.append(f"{k}={replacement}")
        else:
            params.append(f"{k}={v}" if sep else k)
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(params), parts.fragment))


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (user and host kept)."""
    try:
        return _replace_password(url, MASK)
    except ValueError:
        return MASK


class SecretUrl:
    """A connection URL whose password never prints; ``str()`` gives the masked form."""

    __slots__ = ("_secret",)

    def __init__(self, url: str) -> None:
        self._secret = Secret(url)

    def reveal(self) -> str:
        return self._secret.reveal()

    @property
    def masked(self) -> str:
        return mask_url(self.reveal())

    @property
    def password(self) -> str | None:
        """From the userinfo, or else a ``password`` query parameter."""
        try:
            parts = urlsplit(self.reveal())
        except ValueError:
            return None
        if parts.password:
            return unquote(parts.password)
        for k, _, v in (p.partition("=") for p in parts.query.split("&") if p):
            if k.lower() == "password" and v:
                return unquote(v)
        return None

    @property
    def without_password(self) -> str:
        """The URL with no password anywhere in it, for a command line; the password
        travels separately (``PGPASSWORD``), where ``ps`` cannot show it."""
        return _replace_password(self.reveal(), None)

    def __repr__(self) -> str:
        return f"SecretUrl('{self.masked}')"

    def __str__(self) -> str:
        return self.masked

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretUrl):
            return self.reveal() == other.reveal()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("SecretUrl", self.reveal()))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SecretUrl cannot be pickled")


class Redactor:
    """Replaces known secret values in free text: the last line of defence for output
    that opsgate does not format itself (tracebacks, captured logs, library messages)."""

    def __init__(self, values: list[str] | None = None) -> None:
        self._values: list[str] = []
        for v in values or []:
            self.add(v)

    def add(self, value: str | None) -> None:
        # Very short values would redact ordinary words; secrets that short are refused
        # elsewhere anyway, so they are not worth mangling output for.
        if value and len(value) >= 4 and value not in self._values:
            self._values.append(value)
            self._values.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._values)

    def __repr__(self) -> str:
        return f"Redactor({len(self._values)} values)"
