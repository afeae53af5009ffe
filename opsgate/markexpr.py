"""pytest's ``-m`` marker expressions, parsed and evaluated by opsgate itself.

The gate reads a ``-m`` before pytest does: to refuse a typo before a sandbox is built,
and to know which checks it selects (`opsgate.gate.selected_checks`). pytest has no
public parser of these expressions; its own is private (``_pytest.mark.expression``)
and may change in any release, so this one is hand-written, to the grammar pytest
documents (pytest 8 and 9)::

    expression: expr? EOF
    expr:       and_expr ('or' and_expr)*
    and_expr:   not_expr ('and' not_expr)*
    not_expr:   'not' not_expr | '(' expr ')' | ident kwargs?
    ident:      (\\w|:|\\+|-|\\.|\\[|\\]|\\\\|/)+
    kwargs:     ('(' name '=' value ( ', ' name '=' value )*  ')')
    value:      (unescaped) string literal | (-)?[0-9]+ | 'False' | 'True' | 'None'

An empty expression is false. The self-tests hold it to pytest's own selection through
real pytest runs (tests/unit/test_markexpr.py).
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

#: A keyword argument's value in ``marker(name=value)``.
Value = str | int | bool | None

_IDENT = re.compile(r"(?:\w|:|\+|-|\.|\[|\]|\\|/)+")
_KEYWORDS = {"or", "and", "not"}
_CONSTANTS: dict[str, Value] = {"True": True, "False": False, "None": None}


class Matcher(Protocol):
    """Whether a test carries marker ``name`` (with these keyword arguments)."""

    def __call__(self, name: str, /, **kwargs: Value) -> bool: ...


class MarkerExpressionError(ValueError):
    """Not a marker expression; the message says where (column, 1-based) and why."""


_Node = Callable[[Matcher], bool]


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "=", ",", "or", "and", "not", "ident", "string", "end"
    text: str
    column: int


def _tokens(text: str) -> Iterator[_Token]:
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char in " \t":
            pos += 1
        elif char in "()=,":
            yield _Token(char, char, pos + 1)
            pos += 1
        elif char in "'\"":
            end = text.find(char, pos + 1)
            if end == -1:
                raise MarkerExpressionError(f"column {pos + 1}: closing quote {char} is missing")
            if "\\" in text[pos:end]:
                raise MarkerExpressionError(
                    f"column {pos + 1}: escaping with \\ is not supported in a marker expression")
            yield _Token("string", text[pos + 1:end], pos + 1)
            pos = end + 1
        elif match := _IDENT.match(text, pos):
            word = match.group(0)
            yield _Token(word if word in _KEYWORDS else "ident", word, pos + 1)
            pos = match.end()
        else:
            raise MarkerExpressionError(f"column {pos + 1}: unexpected character {char!r}")
    yield _Token("end", "", len(text) + 1)


class _Parser:
    """Recursive descent, one method per rule of the grammar."""

    def __init__(self, text: str) -> None:
        self._tokens = _tokens(text)
        self._current = next(self._tokens)
        self.names: set[str] = set()

    def _accept(self, kind: str) -> _Token | None:
        token = self._current
        if token.kind != kind:
            return None
        if kind != "end":
            self._current = next(self._tokens)
        return token

    def _expect(self, *kinds: str) -> _Token:
        for kind in kinds:
            if token := self._accept(kind):
                return token
        got = self._current
        seen = "the end" if got.kind == "end" else repr(got.text)
        raise MarkerExpressionError(
            f"column {got.column}: expected {' or '.join(kinds)}; got {seen}")

    def expression(self) -> _Node:
        if self._accept("end"):
            return lambda _: False
        node = self.expr()
        self._expect("end")
        return node

    def expr(self) -> _Node:
        terms = [self.and_expr()]
        while self._accept("or"):
            terms.append(self.and_expr())
        return terms[0] if len(terms) == 1 else lambda m: any(t(m) for t in terms)

    def and_expr(self) -> _Node:
        terms = [self.not_expr()]
        while self._accept("and"):
            terms.append(self.not_expr())
        return terms[0] if len(terms) == 1 else lambda m: all(t(m) for t in terms)

    def not_expr(self) -> _Node:
        if self._accept("not"):
            inner = self.not_expr()
            return lambda m: not inner(m)
        if self._accept("("):
            node = self.expr()
            self._expect(")")
            return node
        name = self._expect("not", "(", "ident").text
        self.names.add(name)
        if not self._accept("("):
            return lambda m: m(name)
        kwargs = dict([self.kwarg()])
        while self._accept(","):
            kwargs.update([self.kwarg()])
        self._expect(")")
        return lambda m: m(name, **kwargs)

    def kwarg(self) -> tuple[str, Value]:
        key = self._expect("ident")
        if not key.text.isidentifier() or keyword.iskeyword(key.text):
            raise MarkerExpressionError(
                f"column {key.column}: {key.text!r} is not a keyword argument's name")
        self._expect("=")
        if token := self._accept("string"):
            return key.text, token.text
        token = self._expect("ident")
        if re.fullmatch(r"-?[0-9]+", token.text):
            return key.text, int(token.text)
        if token.text in _CONSTANTS:
            return key.text, _CONSTANTS[token.text]
        raise MarkerExpressionError(
            f"column {token.column}: {token.text!r} is not a value (a quoted string, an "
            "integer, True, False or None)")


@dataclass(frozen=True)
class MarkerExpression:
    """A compiled ``-m`` expression."""

    text: str
    #: The marker names it mentions (not its keyword arguments' names or values).
    names: frozenset[str]
    _root: _Node

    @classmethod
    def compile(cls, text: str) -> MarkerExpression:
        parser = _Parser(text)
        root = parser.expression()
        return cls(text, frozenset(parser.names), root)

    def evaluate(self, matcher: Matcher) -> bool:
        return self._root(matcher)
