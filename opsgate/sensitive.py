"""Secret values that never show themselves.

A `Secret` hides its value from ``str``, ``repr``, ``format``, pickling and pytest's
assertion rewriting (which uses ``repr``). The value is only reachable through
``reveal()``, so every place that uses a secret is greppable. `mask_url` hides the
password of a connection URL for headers, reports and error messages.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"

#: Secrets shorter than this are masked only where they stand alone (see `Redactor`).
SHORT = 4


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


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)$", re.S)

#: Query parameters whose values are secrets (a password, a token, Vercel's protection
#: bypass): masked like a password. Matched as substrings of the parameter's name.
SECRET_PARAMS = ("password", "token", "secret", "bypass", "signature", "apikey", "api_key")


def _is_secret_param(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_PARAMS)


def _split_userinfo(url: str) -> tuple[str, str | None, str]:
    """(``scheme://``, userinfo or None, the rest). The userinfo ends at the LAST "@":
    a password may hold "/", "?", "#" or "@" unencoded, which ``urlsplit`` would take
    for the end of the host (and then show the password as a path or a fragment)."""
    m = _SCHEME.match(url)
    if m is None:
        raise ValueError("not a URL")
    scheme, body = m.groups()
    at = body.rfind("@")
    if at < 0:
        return scheme, None, body
    return scheme, body[:at], body[at + 1:]


def _query(rest: str) -> str:
    """The query of a URL's part after its userinfo, split as ``urlsplit`` splits it but
    without its checks of the host: a URL with an unbalanced "[" is still scanned for
    secret parameters (``urlsplit`` raises on it)."""
    return rest.partition("#")[0].partition("?")[2]


def _replace_password(url: str, replacement: str | None) -> str:
    """``url`` with its password (in the userinfo, or a secret query parameter such as
    ``password``, which libpq also accepts) replaced by ``replacement``, or removed when
    it is None."""
    scheme, userinfo, rest = _split_userinfo(url)
    parts = urlsplit(scheme + rest)
    params = []
    for k, sep, v in (p.partition("=") for p in parts.query.split("&") if p):
        if _is_secret_param(k):
            if replacement is not None:
                params.append(f"{k}={replacement}")
        else:
            params.append(f"{k}={v}" if sep else k)
    tail = urlunsplit(("", parts.netloc, parts.path, "&".join(params), parts.fragment))
    rest = tail.removeprefix("//")
    if userinfo is None:
        return scheme + rest
    user, sep, _ = userinfo.partition(":")
    if sep and replacement is not None:
        return f"{scheme}{user}:{replacement}@{rest}"
    return f"{scheme}{user}@{rest}" if user else scheme + rest


def secret_parts(url: str) -> list[str]:
    """The secret values inside a URL as written and as decoded (the userinfo password,
    secret query parameters), for a redactor."""
    try:
        _, userinfo, rest = _split_userinfo(url)
    except ValueError:
        return []
    found = []
    if userinfo and ":" in userinfo:
        password = userinfo.partition(":")[2]
        found.append(password)
        # libpq ends the userinfo at the FIRST "@" or "/": the rest of such a password
        # then reaches error messages as a host name. Its pieces are secrets too.
        found += [piece for piece in re.split(r"[@/?#]", password) if piece != password]
    for k, _, v in (p.partition("=") for p in _query(rest).split("&") if p):
        if _is_secret_param(k) and v:
            found.append(v)
    return [x for v in found for x in (v, unquote(v)) if x]


def _is_url(conninfo: str) -> bool:
    return _SCHEME.match(conninfo.lstrip()) is not None


def _keywords(conninfo: str) -> dict[str, Any]:
    """A libpq keyword string (``host=h password=p ...``) parsed by psycopg, which
    follows libpq's quoting rules; a hand-written split would miss ``'a b'`` values."""
    from psycopg.conninfo import conninfo_to_dict

    return conninfo_to_dict(conninfo)


#: ``password = value`` in a keyword string, the value bare or single-quoted with
#: backslash escapes (libpq's rules). Used only on strings psycopg has parsed, to keep
#: the user's order and spelling in what is shown (psycopg would rebuild the string).
_PASSWORD_KEYWORD = re.compile(
    r"(?<![\w])password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']\S*)(\s*)")


def _keywords_with_password(conninfo: str, replacement: str | None) -> str:
    _keywords(conninfo)  # unparseable: raises, and the caller hides it whole
    if replacement is None:
        return _PASSWORD_KEYWORD.sub("", conninfo).strip()
    return _PASSWORD_KEYWORD.sub(lambda m: f"password={replacement}{m.group(2)}", conninfo)


def mask_url(url: str) -> str:
    """Return ``url`` (a URL or a libpq keyword string) with any password replaced by
    ``***`` (user and host kept); something that parses as neither is masked whole."""
    try:
        if not _is_url(url):
            return _keywords_with_password(url, MASK)
        return _replace_password(url, MASK)
    except Exception:  # psycopg's ProgrammingError, ValueError: unparseable, hide it all
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
        """From the userinfo, or else a ``password`` query parameter (or keyword)."""
        if not _is_url(self.reveal()):
            try:
                value = _keywords(self.reveal()).get("password")
            except Exception:
                return None
            return str(value) if value else None
        try:
            _, userinfo, rest = _split_userinfo(self.reveal())
        except ValueError:
            return None
        if userinfo and ":" in userinfo and userinfo.partition(":")[2]:
            return unquote(userinfo.partition(":")[2])
        for k, _, v in (p.partition("=") for p in _query(rest).split("&") if p):
            if k.lower() == "password" and v:
                return unquote(v)
        return None

    @property
    def without_password(self) -> str:
        """The URL with no password anywhere in it, for a command line; the password
        travels separately (``PGPASSWORD``), where ``ps`` cannot show it."""
        if not _is_url(self.reveal()):
            return _keywords_with_password(self.reveal(), None)
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
        self._short: list[re.Pattern[str]] = []
        for v in values or []:
            self.add(v)

    def add(self, value: str | None) -> None:
        if not value:
            return
        # Also the forms in which text shows a value: repr() and JSON escape
        # backslashes and quotes, so a secret with a "\" prints as something else.
        for form in (value, repr(value)[1:-1], json.dumps(value)[1:-1]):
            self._add(form)

    def _add(self, value: str) -> None:
        if value and value not in self._values:
            self._values.append(value)
            self._values.sort(key=len, reverse=True)
            self._short = [re.compile(r"(?<![A-Za-z0-9])" + re.escape(v) + r"(?![A-Za-z0-9])")
                           for v in self._values if len(v) < SHORT]

    def __call__(self, text: str) -> str:
        for v in self._values:
            if len(v) >= SHORT and v in text:
                text = text.replace(v, MASK)
        # A short secret ("abc") is masked where it stands alone, not inside other words,
        # which it would otherwise mangle ("abcdef"); where a secret is used (a URL's
        # userinfo, a password= keyword, a header value) it stands alone.
        for pattern in self._short:
            text = pattern.sub(MASK, text)
        return text

    def __bool__(self) -> bool:
        return bool(self._values)

    def __repr__(self) -> str:
        return f"Redactor({len(self._values)} values)"
