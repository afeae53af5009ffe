"""Secret values that never show themselves.

A `Secret` hides its value from ``str``, ``repr``, ``format``, pickling and pytest's
assertion rewriting (which uses ``repr``). The value is only reachable through
``reveal()``, so every place that uses a secret is greppable. `mask_url` hides the
password of a connection URL for headers, reports and error messages.
"""

from __future__ import annotations

from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

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


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (user and host kept).

    Query parameters named ``password`` are masked too (libpq accepts them).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    query = "&".join(
        f"{k}={MASK}" if k.lower() == "password" else (f"{k}={v}" if sep else k)
        for k, sep, v in (p.partition("=") for p in parts.query.split("&") if p)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


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
        try:
            return urlsplit(self.reveal()).password
        except ValueError:
            return None

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
