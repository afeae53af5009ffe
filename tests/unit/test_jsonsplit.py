"""The top-level splitter reads what json.loads reads, whatever the chunking, and
refuses what it refuses, saying where."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opsgate.verify import jsonsplit

SCALARS = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(
    allow_nan=False, allow_infinity=False) | st.text(max_size=8)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=5), inner, max_size=4), max_leaves=12)
DOCS = st.dictionaries(st.sampled_from(["nodes", "edges", "metadata", "x", "ü"]),
                       st.lists(VALUES, max_size=6) | VALUES, max_size=4)


def rebuild(data: bytes) -> Any:
    """The document put back together from the events."""
    out: dict[str, Any] = {}
    for key, kind, value in jsonsplit.members(io.BytesIO(data), frozenset({"nodes", "edges"})):
        if kind == jsonsplit.DOCUMENT:
            return value
        if kind == jsonsplit.START:
            out[key] = []
        elif kind == jsonsplit.ITEM:
            out[key].append(value)
        else:
            out[key] = value
    return out


@settings(max_examples=300, deadline=None)
@given(doc=DOCS, chunk=st.integers(1, 64), indent=st.sampled_from([None, 0, 2]),
       separators=st.sampled_from([None, (",", ":"), (" , ", " : ")]))
def test_any_chunking_reads_what_json_loads_reads(doc: dict[str, Any], chunk: int,
                                                 indent: int | None,
                                                 separators: tuple[str, str] | None) -> None:
    data = json.dumps(doc, indent=indent, separators=separators, ensure_ascii=False).encode()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jsonsplit, "CHUNK", chunk)
        assert rebuild(b" \n" + data + b"\n") == json.loads(data)


@pytest.mark.parametrize(("data", "needle"), [
    (b"<!doctype html><html>", "Expecting value (at character 0)"),
    (b'{"nodes": [1, 2', "expected ',' or ']' in nodes, found the end of the input"),
    (b'{"nodes": [{"id": "a"}, {"id": "b', "Unterminated string"),
    (b'{"nodes": [1 2]}', "expected ',' or ']' in nodes"),
    (b'{"nodes": [1,]}', "Expecting value"),
    (b'{"nodes": []} {}', "extra data after the document"),
    (b'{"metadata": NaN}', "NaN is not JSON"),
    (b'{"a" 1}', "expected ':'"),
    (b'{"nodes": [1], "edges": [2]', "expected ',' or '}' after a member"),
    (b'\xff{}', "not UTF-8"),
])
def test_what_is_not_json_is_refused_saying_where(data: bytes, needle: str) -> None:
    with pytest.raises(jsonsplit.JsonSplitError) as caught:
        rebuild(data)
    assert needle in str(caught.value), str(caught.value)
