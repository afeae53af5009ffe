"""Env files read as the app reads them: Next.js's ``@next/env`` (``loadEnvConfig``).

``@next/env`` 16.5.0 bundles dotenv 16.3.1 (parsing) and dotenv-expand 10.0.0
(``$NAME``/``${NAME}`` expansion). This module is a port of those two, quirks included,
hand-written because the gate must see the values the deployed app sees and no Python
library does: python-dotenv 1.2, on the files of tests/integration/test_envfile_next.py,
gives 14 of the 28 values of a ``vercel env pull`` file differently, four of them
dropped (``"say \\"hi\\""``, a value ending in a backslash and the line after it) with
warnings that name no file; it keeps ``#`` glued to an unquoted value, unescapes
``\\"``, expands ``${NAME}`` but not ``$NAME`` and knows no ``\\$``.

Where dotenv would read a line leniently or skip it silently, opsgate refuses the file
instead (`ConfigError`, naming the file, the line and the key, never a value): a line
that is not ``KEY=VALUE``, a comment or blank; a value opening a quote it never closes
(dotenv keeps the quote as part of the value); a value or ``=`` on a later line than its
key; ``__proto__`` (Node drops it); an expansion that never ends (Node skips the whole
file); a reference to a name JavaScript resolves to a built-in function. Every file
opsgate accepts gives exactly ``@next/env``'s values (that test compares them under
Node).
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from opsgate.errors import ConfigError

# JavaScript's \s and String.prototype.trim: WhiteSpace and LineTerminator. Python's \s
# and str.strip differ (\x1c-\x1f and \x85 are space to Python, \ufeff is not), so the
# regexes below spell JavaScript's classes out.
_JS_SPACE = ("\t\n\v\f\r \u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
             + "\u2028\u2029\u202f\u205f\u3000\ufeff")
_S = r"[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
_TERMINATORS = "\n\r\u2028\u2029"  # where JavaScript's multiline ^ and $ match
_BOL = r"(?:(?<=[\n\r\u2028\u2029])|\A)"
_EOL = r"(?=[\n\r\u2028\u2029]|\Z)"

#: dotenv 16.3.1's LINE, with JavaScript's ^ $ \s \w . made explicit (named groups
#: only mark positions; they do not change what matches).
_LINE = re.compile(
    _BOL + _S + r"*(?P<export>export" + _S + r"+)?(?P<key>[A-Za-z0-9_.-]+)"
    r"(?:" + _S + r"*(?P<eq>=)" + _S + r"*?|(?P<colon>:)" + _S + r"+?)"
    r"(?P<value>" + _S + r"*'(?:\\'|[^'])*'|" + _S + r"*\"(?:\\\"|[^\"])*\"|"
    + _S + r"*`(?:\\`|[^`])*`|[^#\r\n]+)?"
    + _S + r"*(?:#[^\n\r\u2028\u2029]*)?" + _EOL)
_SURROUNDING_QUOTES = re.compile(_BOL + r"(['\"`])((?s:.)*)\1" + _EOL)

#: dotenv-expand 10.0.0: the reference at the last "$" not preceded by a backslash
#: (``$NAME``, ``${NAME}``, ``${NAME:-default}``).
_REFERENCE = re.compile(r"((?<!\\)\$\{?([A-Za-z0-9_]+)(?::-([^}\\]*))?\}?)")
#: String.prototype.replace's "$" patterns in a replacement string (no capture groups).
_JS_REPLACEMENT = re.compile(r"\$([$&`'])")

#: Names a JavaScript object inherits: ``process.env[name]`` is then a function, which
#: String.prototype.replace calls. opsgate refuses such a reference instead.
_OBJECT_MEMBERS = frozenset({
    "constructor", "hasOwnProperty", "isPrototypeOf", "propertyIsEnumerable",
    "toLocaleString", "toString", "valueOf", "__proto__", "__defineGetter__",
    "__defineSetter__", "__lookupGetter__", "__lookupSetter__"})
#: @next/env sets this in process.env before it expands anything.
_NEXT_MARK = {"__NEXT_PROCESSED_ENV": "true"}
#: Substitutions one value may take, and its length: an expansion past either has run
#: away (a value refers to itself), and Node ends such a one with a RangeError (call
#: stack, string length), skipping the whole file. Node's own limit is its call stack,
#: some thousands of substitutions; no value written by hand needs a thousand.
MAX_SUBSTITUTIONS = 1_000
MAX_LENGTH = 1_000_000


@dataclass(frozen=True)
class Entry:
    """One variable as dotenv's parse gives it (before expansion), and its line."""

    key: str
    value: str
    line: int


@dataclass(frozen=True)
class EnvFile:
    """A parsed env file: its entries in the order JavaScript enumerates them."""

    label: str
    entries: Mapping[str, Entry]

    def values(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The file's variables as ``@next/env`` leaves them in ``process.env`` when the
        process starts with ``environ``: a variable the environment already sets keeps
        the environment's value, expanded as the file's values are."""
        return expand(self, environ)


def read(path: str | os.PathLike[str], label: str) -> EnvFile:
    """Parse the file at ``path``; ``label`` starts every error message."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{label}: cannot be read ({exc.__class__.__name__})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{label}: line {line} is not UTF-8") from None
    return parse(text, label)


class _Lines:
    """Line numbers of positions in the text (lines end at "\\n", as editors count)."""

    def __init__(self, text: str) -> None:
        self.ends = [i for i, c in enumerate(text) if c == "\n"]

    def of(self, pos: int) -> int:
        return bisect.bisect_left(self.ends, pos) + 1


def _first_visible(text: str, start: int, end: int) -> int:
    """The first position in [start, end) that is not JavaScript space (end if none)."""
    stripped = text[start:end].lstrip(_JS_SPACE)
    return end - len(stripped)


def _has_terminator(text: str) -> bool:
    return any(c in _TERMINATORS for c in text)


def parse(text: str, label: str) -> EnvFile:
    """dotenv 16.3.1's ``parse``, refusing what it would read leniently or skip."""
    text = re.sub(r"\r\n?", "\n", text)
    lines = _Lines(text)
    entries: dict[str, Entry] = {}
    problems: list[str] = []
    covered = 0
    for m in _LINE.finditer(text):
        problems += _skipped(text, covered, m.start(), lines)
        covered = m.end()
        key = m.group("key")
        head = _first_visible(text, m.start(), m.start("key"))
        line = lines.of(head)
        sep = m.start("eq") if m.group("eq") is not None else m.start("colon")
        if _has_terminator(text[head:sep]):
            word = "export " if m.group("export") else ""
            problems.append(f"line {line}: {word}{key} and its = are not on one line")
            continue
        raw = m.group("value") or ""
        if raw and _has_terminator(text[sep:_first_visible(text, m.start("value"),
                                                            m.end("value"))]):
            problems.append(f"line {line}: {key} has no value on its line, and dotenv "
                            f"would read the next line as its value")
            continue
        value = raw.strip(_JS_SPACE)
        quote = value[:1]
        if quote in ("'", '"', "`") and (len(value) < 2 or value[-1] != quote):
            problems.append(f"line {line}: the value of {key} opens a {quote} that does "
                            f"not close at the end of the value")
            continue
        if key == "__proto__":
            problems.append(f"line {line}: __proto__ cannot be set (Node ignores it)")
            continue
        value = _SURROUNDING_QUOTES.sub(lambda q: q.group(2), value)
        if quote == '"':
            value = value.replace("\\n", "\n").replace("\\r", "\r")
        # A key set twice: the later value, in the first one's place (a JS object's way).
        entries[key] = Entry(key, value, line)
    problems += _skipped(text, covered, len(text), lines)
    if problems:
        more = f" (and {len(problems) - 1} more unreadable)" if len(problems) > 1 else ""
        raise ConfigError(f"{label}: {problems[0]}{more}")
    return EnvFile(label, {k: entries[k] for k in _js_order(entries)})


def _skipped(text: str, start: int, end: int, lines: _Lines) -> list[str]:
    """Lines dotenv passes over in silence: fine when blank or a comment."""
    problems = []
    pos = start
    for piece in re.split(r"([\n\r\u2028\u2029])", text[start:end]):
        visible = piece.strip(_JS_SPACE)
        if visible and not visible.startswith("#"):
            at = lines.of(_first_visible(text, pos, pos + len(piece)))
            problems.append(f"line {at} is not KEY=VALUE, a comment or blank")
        pos += len(piece)
    return problems


def _js_order(keys: Iterable[str]) -> list[str]:
    """The order ``for...in`` enumerates a JS object's keys: array indices (canonical
    integers below 2**32 - 1) ascending first, then the others as inserted. Expansion
    follows it, so it decides which values are still raw when another refers to them."""
    keys = list(keys)
    index = [k for k in keys if k.isdigit() and str(int(k)) == k and int(k) < 2**32 - 1]
    return sorted(index, key=int) + [k for k in keys if k not in set(index)]


def _js_replace_first(value: str, pattern: str, replacement: str) -> str:
    """``value.replace(pattern, replacement)`` with a string pattern: the first
    occurrence only, and ``$$ $& $` $'`` in the replacement mean what they mean in JS."""
    at = value.find(pattern)
    before, after = value[:at], value[at + len(pattern):]
    special = {"$": "$", "&": pattern, "`": before, "'": after}
    return before + _JS_REPLACEMENT.sub(lambda m: special[m.group(1)], replacement) + after


def _last_unescaped_dollar(value: str) -> int:
    """dotenv-expand's ``_searchLast(value, /(?!(?<=\\\\))\\$/g)``, from the end."""
    at = len(value)
    while (at := value.rfind("$", 0, at)) > 0 and value[at - 1] == "\\":
        pass
    return at


def _interpolate(value: str, environment: Mapping[str, str], parsed: Mapping[str, str],
                 where: str) -> str:
    """dotenv-expand 10.0.0's ``_interpolate``, a loop where it recurses: replace the
    reference at the last unescaped "$" (its text's first occurrence, as JS's replace
    does), then look again; stop when that "$" starts no reference."""
    seen = {value}
    for _ in range(MAX_SUBSTITUTIONS):
        last = _last_unescaped_dollar(value)
        # JS searches the rest of the value unanchored, but every later "$" is escaped,
        # and a reference starts with an unescaped one: only a match right here counts.
        m = _REFERENCE.match(value, last) if last >= 0 else None
        if m is None:
            return value
        group, name, default = m.group(1), m.group(2), m.group(3)
        # environment[name] || default || parsed[name] || ""
        if name in _OBJECT_MEMBERS and (name not in environment or (
                not environment[name] and not default and name not in parsed)):
            raise ConfigError(f"{where} refers to a name JavaScript resolves to a "
                              "built-in function; rename it")
        replacement = environment.get(name) or default or parsed.get(name) or ""
        value = _js_replace_first(value, group, replacement)
        if value in seen or len(value) > MAX_LENGTH:
            break
        seen.add(value)
    raise ConfigError(f"{where} refers to itself: its expansion never ends (@next/env "
                      "would skip the whole file)")


def expand(env_file: EnvFile, environ: Mapping[str, str]) -> dict[str, str]:
    """dotenv-expand 10.0.0's ``expand`` over ``process.env`` = ``environ``: each key in
    turn takes the environment's value when it has one, else the file's, expanded and
    with ``\\$`` made ``$``; references see the environment first, then a default, then
    the file (earlier keys expanded, later ones raw)."""
    environment = {**environ, **_NEXT_MARK}
    parsed = {k: e.value for k, e in env_file.entries.items()}
    for key, entry in env_file.entries.items():
        value = environment[key] if key in environment else parsed[key]
        where = f"{env_file.label}: line {entry.line}: {key}"
        parsed[key] = _interpolate(value, environment, parsed, where).replace("\\$", "$")
    return parsed
