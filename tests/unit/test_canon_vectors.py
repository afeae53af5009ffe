"""canon-v1's compiled serialiser writes exactly RFC 8785's bytes.

Two kinds of proof: RFC 8785's published vectors (the reference implementation's
documents and its ES6 number sequence, `tests/data/jcs/README.md`), and hypothesis
properties against the pure-Python ``rfc8785`` package (the oracle) over the value
space canon-v1 accepts, aimed at the places where orjson and RFC 8785 differ: key order
by UTF-16 code units (astral characters), number formatting over the whole double
range, integers beyond 2**53, string escapes, lone surrogates.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from opsgate.errors import CanonError
from opsgate.verify import canon
from tests.strategies import json_values, payloads

DATA = Path(__file__).resolve().parent.parent / "data" / "jcs"
VECTORS = sorted(p.stem for p in (DATA / "input").glob("*.json"))


def oracle(document: Any) -> bytes:
    """canon-v1 as it was first written: the normal form through the ``rfc8785`` package
    (which lets a lone surrogate in a key escape as UnicodeEncodeError)."""
    try:
        return bytes(rfc8785.dumps(canon.normalize(document)))
    except (rfc8785.CanonicalizationError, UnicodeEncodeError) as exc:
        raise CanonError(str(exc)) from None


def assert_same_as_oracle(document: Any) -> None:
    try:
        expected = oracle(document)
    except CanonError:
        with pytest.raises(CanonError):
            canon.canonical_json(document)
        return
    assert canon.canonical_json(document) == expected


# -- published vectors ------------------------------------------------------------------


def test_all_vectors_are_present() -> None:
    assert VECTORS == ["arrays", "french", "structures", "unicode", "values", "weird"]


@pytest.mark.parametrize("name", VECTORS)
def test_rfc8785_reference_vectors(name: str) -> None:
    document = json.loads((DATA / "input" / f"{name}.json").read_bytes())
    expected = (DATA / "output" / f"{name}.json").read_bytes()
    assert canon.canonical_json(document) == expected
    assert oracle(document) == expected


def es6_sequence() -> Iterator[float]:
    """The doubles of the ES6 number test file, in its order (numgen.go's generator)."""
    for line in (DATA / "es6-static-values.txt").read_text().split():
        yield struct.unpack("<d", int(line, 16).to_bytes(8, "little"))[0]
    for i in range(2000):
        yield struct.unpack("<d", (0x0010000000000000 + i).to_bytes(8, "little"))[0]
    block = bytes(32)
    while True:
        block = hashlib.sha256(block).digest()
        for j in range(0, 32, 8):
            f = struct.unpack("<d", block[j: j + 8])[0]
            if f != 0 and math.isfinite(f):
                yield f


#: SHA-256 of the first lines of es6testfile100m.txt, as its README publishes them.
ES6_FILE_HASHES = {
    1000: "be18b62b6f69cdab33a7e0dae0d9cfa869fda80ddc712221570f9f40a5878687",
    10000: "b9f7a8e75ef22a835685a52ccba7f7d6bdc99e34b010992cbc5864cd12be6892",
    100000: "22776e6d4b49fa294a0d0f349268e5c28808fe7e0cb2bcbe28f63894e494d4c7",
}


def test_es6_number_test_file_regenerated_byte_for_byte() -> None:
    """Each line is ``hex-bits,expected``; the number is written by canon-v1 as a
    document ``[f]`` (so through the whole serialiser, not only `es6_number`)."""
    digest = hashlib.sha256()
    seen = {}
    for n, f in enumerate(es6_sequence(), start=1):
        bits = struct.unpack("<Q", struct.pack("<d", f))[0]
        text = canon.canonical_json([f])[1:-1]
        digest.update(f"{bits:x},".encode() + text + b"\n")
        if n in ES6_FILE_HASHES:
            seen[n] = digest.hexdigest()
            if n == max(ES6_FILE_HASHES):
                break
    assert seen == ES6_FILE_HASHES


@pytest.mark.parametrize(("bits", "expected"), [
    # The sample lines of the ES6 test file's README and the examples of RFC 8785
    # appendix B (NaN and infinities, refused, are tested elsewhere).
    ("4340000000000001", "9007199254740994"), ("4340000000000002", "9007199254740996"),
    ("444b1ae4d6e2ef50", "1e+21"), ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"), ("8000000000000000", "0"), ("0", "0"),
    ("1", "5e-324"), ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"), ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"), ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"), ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"), ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("3eb0c6f7a0b5ed8e", "0.0000010000000000000002"), ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"), ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"), ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"), ("43143ff3c1cb0959", "1424953923781206.2"),
])
def test_rfc8785_number_examples(bits: str, expected: str) -> None:
    f = struct.unpack("<d", int(bits, 16).to_bytes(8, "little"))[0]
    assert canon.canonical_json([f]) == f"[{expected}]".encode()


# -- properties against the oracle --------------------------------------------------------

#: Every character JSON text can hold (no lone surrogates), weighted towards the
#: ranges where orjson and RFC 8785 could differ: controls, escapes, U+E000-U+FFFF and
#: the astral planes (UTF-16 vs code point key order).
chars = st.one_of(
    st.characters(exclude_categories=["Cs"]),
    st.characters(min_codepoint=0, max_codepoint=0x7F),
    st.characters(min_codepoint=0xE000, max_codepoint=0xFFFF, exclude_categories=["Cs"]),
    st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),
    st.sampled_from('"\\/\b\f\n\r\t\x7f\u2028\u2029\ufeff'),
)
wide_text = st.text(chars, max_size=8)
doubles = st.floats(allow_nan=False, allow_infinity=False)
wide_numbers = st.one_of(doubles, st.integers(), st.integers(-(2**1100), 2**1100),
                         st.integers(2**53 - 3, 2**53 + 3), st.integers(-(2**53) - 3, -(2**53) + 3))

wide_values = st.recursive(
    st.one_of(st.none(), st.booleans(), wide_numbers, wide_text),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(wide_text, children, max_size=5)),
    max_leaves=25,
)


@settings(max_examples=2000)
@given(doubles)
def test_doubles_across_the_whole_range(f: float) -> None:
    assert canon.canonical_json([f, -f]) == oracle([f, -f])


@settings(max_examples=500)
@given(st.integers(-(2**1100), 2**1100))
def test_integers_of_any_size_fold_like_the_oracle(i: int) -> None:
    assert_same_as_oracle({"i": i})


@settings(max_examples=1000)
@given(st.dictionaries(wide_text, st.integers(0, 9), max_size=8))
def test_object_keys_sort_by_utf16_code_units(doc: dict[str, int]) -> None:
    assert canon.canonical_json(doc) == oracle(doc)


def test_astral_key_sorts_before_a_high_bmp_key() -> None:
    """U+1F602 is D83D DE02 in UTF-16: before U+FB33, although its code point is after;
    also when the two differ after a common prefix (the fault that was: only the first
    character was looked at)."""
    doc = {"\ufb33": 1, "\U0001f602": 2, "a": 3}
    assert canon.canonical_json(doc) == '{"a":3,"\U0001f602":2,"\ufb33":1}'.encode()
    doc = {"a\ufb33": 1, "a\U0001f602": 2, "a": 3}
    assert canon.canonical_json(doc) == '{"a":3,"a\U0001f602":2,"a\ufb33":1}'.encode()


#: Keys that share a prefix and differ where one has an astral character and the other
#: one in U+E000-U+FFFF: the case where the two orders disagree.
sensitive_keys = st.builds(
    lambda prefix, c, suffix: prefix + c + suffix,
    st.text("ab", max_size=2),
    st.one_of(st.characters(min_codepoint=0xE000, max_codepoint=0xFFFF,
                            exclude_categories=["Cs"]),
              st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),
              st.sampled_from("a\x7f\ud7ff")),
    st.text("ab\U0001f602\ufb33", max_size=2))


#: 200 examples: the strategy is aimed at the fault. With the UTF-16 order skipped, or
#: decided on the first character only, every one of 200 random seeds found it within
#: its first 35 examples; 1,000 cost about 3 s more of CPU (hypothesis generating them).
@settings(max_examples=200)
@given(st.dictionaries(sensitive_keys, st.integers(0, 9), min_size=2, max_size=8),
       st.lists(st.dictionaries(sensitive_keys, st.none(), max_size=4), max_size=3))
def test_keys_differing_past_a_common_prefix_sort_by_utf16(doc: dict[str, int],
                                                           nested: list[Any]) -> None:
    assert canon.canonical_json(doc) == oracle(doc)
    assert canon.canonical_json({"x": nested, "y": {"tags": list(doc)}}) == \
        oracle({"x": nested, "y": {"tags": list(doc)}})


@settings(max_examples=1000)
@given(wide_text)
def test_strings_escape_like_the_oracle(s: str) -> None:
    assert canon.canonical_json([s, {s: s}]) == oracle([s, {s: s}])


@given(wide_text, st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), wide_text,
       st.booleans())
def test_lone_surrogates_are_refused(before: str, surrogate: str, after: str,
                                     as_key: bool) -> None:
    s = before + surrogate + after
    with pytest.raises(CanonError):
        canon.canonical_json({s: 1} if as_key else {"k": s})
    with pytest.raises(CanonError):
        oracle({s: 1} if as_key else {"k": s})


@settings(max_examples=500)
@given(wide_values)
def test_any_json_value_like_the_oracle(doc: Any) -> None:
    assert_same_as_oracle(doc)


@given(json_values)
def test_project_strategy_values_like_the_oracle(doc: Any) -> None:
    assert_same_as_oracle(doc)


@given(payloads())
def test_payloads_like_the_oracle(payload: dict[str, Any]) -> None:
    assert canon.canonical_json(payload) == oracle(payload)


scalar_keys = st.one_of(st.none(), st.booleans(), wide_numbers, wide_text)


@settings(max_examples=500)
@given(st.lists(st.tuples(scalar_keys, scalar_keys, scalar_keys), max_size=6),
       st.lists(st.text(chars, max_size=3), max_size=5))
def test_set_members_sort_like_the_oracle_whatever_their_key_values(
        keys: list[tuple[Any, Any, Any]], tags: list[str]) -> None:
    """nodes by str(id), edges by str() of their key fields, tags by code point: also
    for numbers (``1e+20`` sorts as it prints), booleans, null, astral text."""
    doc = {"nodes": [{"id": a, "tags": tags} for a, _, _ in keys],
           "edges": [{"source": a, "target": b, "relation": c} for a, b, c in keys],
           "domains": tags}
    assert_same_as_oracle(doc)


def test_object_valued_ids_sort_as_their_normal_form_prints() -> None:
    nodes = [{"id": {"b": 1, "a": 2}}, {"id": {"a": 3}}, {"id": [2, 1.0]}]
    assert canon.canonical_json({"nodes": nodes}) == oracle({"nodes": nodes})


@pytest.mark.parametrize("bad", [{1: "a"}, {"a": {2: 3}}, {("t",): 1}, 10**400,
                                 [float("nan")], {"x": float("-inf")}, {"s": {1, 2}}])
def test_refused_like_the_oracle(bad: Any) -> None:
    with pytest.raises(CanonError):
        canon.canonical_json(bad)
