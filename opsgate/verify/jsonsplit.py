"""The members of a large top-level JSON object, with chosen array members item by item.

Why hand-written: the constellation API's answer (~90 MB at 100k entities) has two large
arrays and a small envelope. ijson follows one prefix per pass, so nodes, edges and the
metadata cost three tokenisations of the whole document (measured at 100k entities on
the benchmark machine: about 17 s of parsing for the three passes, where the standard
library's C decoder parses everything once in about 3 s), and its coroutine mode, which
could feed three prefixes from one read, measured slower still. Here the standard
library's decoder (``json.JSONDecoder.raw_decode``) parses every value; this module only
walks the punctuation of the top-level object (``{``, keys, ``:``, ``,``, the chosen
arrays' ``[`` and ``]``) over a window of decoded text that slides as the file is read.
Memory: the window (a chunk plus the item being read), never the document.
"""

from __future__ import annotations

import codecs
import json
import json.scanner
import re
from collections.abc import Callable, Iterator
from typing import IO, Any

from opsgate.errors import OpsgateError

#: Bytes read from the file at a time.
CHUNK = 1 << 20
#: One value longer than this (in characters) is refused rather than buffered.
MAX_VALUE = 64 << 20

#: Event kinds: an array member begins, one of its items, a whole (non-array) member,
#: the whole document when it is not an object.
START, ITEM, VALUE, DOCUMENT = "start", "item", "value", "document"

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER_CHARS = frozenset("0123456789.eE+-")


class JsonSplitError(OpsgateError):
    """The input is not a JSON document (the message says where)."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)
_decode = _DECODER.raw_decode
#: The decoder's C scanner: (value, end) at an index; StopIteration where no value
#: starts, JSONDecodeError where one starts but does not end (in view).
_scan_once: Callable[[str, int], tuple[Any, int]] = (
    json.scanner.make_scanner(_DECODER))  # type: ignore[arg-type]  # typeshed: the class


def _shown(char: str) -> str:
    return repr(char) if char else "the end of the input"


class _Window:
    """Decoded text of a binary file, read a chunk at a time, with a cursor."""

    def __init__(self, f: IO[bytes], on_read: Callable[[int], None] | None) -> None:
        self._f = f
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._on_read = on_read
        self.buf = ""
        self.pos = 0
        self.dropped = 0  # characters before buf, for error offsets
        self.eof = False

    def more(self) -> bool:
        """Read another chunk into the window (dropping what the cursor passed)."""
        if self.eof:
            return False
        data = self._f.read(CHUNK)
        if self.pos:
            self.dropped += self.pos
            self.buf = self.buf[self.pos:]
            self.pos = 0
        try:
            self.buf += self._utf8.decode(data, final=not data)
        except UnicodeDecodeError:
            raise JsonSplitError(f"not UTF-8 near character {self.dropped + len(self.buf)}"
                                 ) from None
        if self._on_read is not None:
            self._on_read(len(data))
        if not data:
            self.eof = True
        return True

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the input)."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def take(self, expected: str, what: str) -> None:
        found = self.peek()
        if found != expected:
            raise self.error(f"expected {what}, found {_shown(found)}")
        self.pos += 1

    def value(self) -> Any:
        """The JSON value at the cursor, read further into the file as it needs."""
        self.peek()
        while True:
            try:
                obj, end = _decode(self.buf, self.pos)
            except ValueError as exc:  # JSONDecodeError, or a NaN/Infinity refused
                if self.eof:
                    raise self.error(str(exc).split(": line ")[0]) from None
            else:
                # A number cut by the window's end reads as a shorter one ("12" of "125",
                # "0" of "0.5"): a number is whole only where a character that cannot
                # continue it follows.
                if self.eof or (end < len(self.buf) and self.buf[end] not in _NUMBER_CHARS):
                    self.pos = end
                    return obj
            if len(self.buf) - self.pos > MAX_VALUE:
                raise self.error(f"a value longer than {MAX_VALUE >> 20} MiB, or not JSON")
            self.more()

    def error(self, message: str) -> JsonSplitError:
        return JsonSplitError(f"{message} (at character {self.dropped + self.pos})")


def _items(w: _Window, key: str) -> Iterator[Any]:
    """The items of the array whose first item is at the cursor, through its ``]``.

    The loop runs once per item (millions of times): compact items separated by a bare
    ``,`` well inside the window are read by the C scanner directly; anything else
    (whitespace, an item cut by the window's end) goes through `_Window` one item at a
    time."""
    scan = _scan_once
    while True:
        buf, pos = w.buf, w.pos
        last = len(buf) - 1
        while True:
            try:
                obj, end = scan(buf, pos)
            except (StopIteration, ValueError):
                break
            if end >= last:  # the separator, and a number's last digit, must be in view
                break
            sep = buf[end]
            if sep == ",":
                yield obj
                pos = end + 1
            elif sep == "]":
                w.pos = end + 1
                yield obj
                return
            else:
                break
        w.pos = pos
        yield w.value()
        if _closed(w, "]", f"in {key}"):
            return


def _closed(w: _Window, close: str, where: str) -> bool:
    """After a value: ``close`` ends the container (True), ``,`` announces another value
    (False); anything else is an error naming ``where``."""
    sep = w.peek()
    w.pos += 1
    if sep == close:
        return True
    if sep != ",":
        w.pos -= 1
        raise w.error(f"expected ',' or '{close}' {where}, found {_shown(sep)}")
    return False


def members(f: IO[bytes], arrays: frozenset[str],
            on_read: Callable[[int], None] | None = None) -> Iterator[tuple[str, str, Any]]:
    """Events ``(key, kind, value)`` of the top-level object in ``f``, in document
    order: for a member named in ``arrays`` whose value is an array, ``(key, START,
    None)`` then ``(key, ITEM, item)`` per item; for any other member ``(key, VALUE,
    value)``. A document that is not an object is one ``("", DOCUMENT, value)``.
    ``on_read`` is told how many bytes each read took (for progress)."""
    w = _Window(f, on_read)
    if w.peek() != "{":
        doc = w.value()
        if w.peek():
            raise w.error("extra data after the document")
        yield "", DOCUMENT, doc
        return
    w.pos += 1
    if w.peek() == "}":
        w.pos += 1
    else:
        while True:
            if w.peek() != '"':
                raise w.error("expected a member name")
            key = w.value()
            w.take(":", "':'")
            if key in arrays and w.peek() == "[":
                w.pos += 1
                yield key, START, None
                if w.peek() == "]":
                    w.pos += 1
                else:
                    for item in _items(w, key):
                        yield key, ITEM, item
            else:
                yield key, VALUE, w.value()
            if _closed(w, "}", "after a member"):
                break
    if w.peek():
        raise w.error("extra data after the document")
