"""The members' fast path writes exactly canon-v1's bytes (`opsgate.verify.canon_members`).

Hypothesis draws members of every shape the contract schema admits and kb.py builds,
aimed at what the fast path skips: doubles that are integers (5.0), integers beyond
2**53, doubles outside [1e-4, 1e16), unsorted tags, astral and U+E000+ characters in
strings, steps with a ``position``; and shapes it must hand to the general way.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opsgate.errors import CanonError
from opsgate.verify import canon
from opsgate.verify.canon_members import edge_bytes, node_bytes
from tests.unit.test_canon_vectors import oracle

strings = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                  max_size=8)
# The contract's integers as a parser may hand them over: ints (some beyond 2**53) and
# integral doubles.
integers = st.one_of(st.integers(0, 2**60), st.integers(0, 4000).map(float),
                     st.sampled_from([2**53 - 1, 2**53, 2**53 + 1, 2.0**53, 1e16, 1e21]))
weights = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                    st.integers(-(2**64), 2**64),
                    st.sampled_from([0.0, -0.0, 1.0, 1e-4, 9.999e-5, 1e16, 1e15 + 0.5, 5e-7]))
derivatives = st.fixed_dictionaries({"variant": strings, "url": strings, "width": integers,
                                     "height": integers})
media = st.fixed_dictionaries({"url": strings, "mime": strings, "bytes": integers,
                               "sha256": st.just("ab" * 32),
                               "derivatives": st.lists(derivatives, max_size=2)})
steps = st.one_of(
    st.fixed_dictionaries({"name": strings, "status": st.just("todo")}),
    st.fixed_dictionaries({"name": strings, "status": st.just("done"),
                           "position": st.integers(-3, 2**54)}))
workflows = st.lists(st.fixed_dictionaries({"name": strings, "status": st.just("active"),
                                            "steps": st.lists(steps, max_size=3)}),
                     min_size=1, max_size=2)


@st.composite
def nodes(draw: Any) -> dict[str, Any]:
    node = {"id": draw(strings), "type": draw(strings), "label": draw(strings),
            "domain": draw(strings), "tags": draw(st.lists(strings, max_size=4, unique=True)),
            "summary": draw(st.one_of(strings, st.none())),
            "media": draw(st.lists(media, max_size=2)),
            "sources": draw(st.lists(strings, max_size=3, unique=True))}
    if draw(st.booleans()):
        node["workflows"] = draw(workflows)
    return node


edges = st.fixed_dictionaries({"source": strings, "target": strings, "relation": strings,
                               "weight": weights})


def same_as_general(fast: Any, member: dict[str, Any]) -> None:
    before = copy.deepcopy(member)
    try:
        expected = canon.canonical_json(member)
    except CanonError:
        with pytest.raises(CanonError):
            fast(member)
        return
    assert fast(member) == expected == oracle(member)
    assert member == before  # the input is not touched


@settings(max_examples=400, deadline=None)
@given(nodes())
def test_node_bytes_are_canon_v1(node: dict[str, Any]) -> None:
    same_as_general(node_bytes, node)


@settings(max_examples=400, deadline=None)
@given(edges)
def test_edge_bytes_are_canon_v1(edge: dict[str, Any]) -> None:
    same_as_general(edge_bytes, edge)


@pytest.mark.parametrize("member", [
    {"id": "n1", "tags": ["b", "a"], "media": [], "extra": "\U0001f600", "\ue000": 1},
    {"id": "n1", "tags": ["b", 1], "media": []},
    {"id": "n1", "tags": "not a list", "media": []},
    {"id": "n1", "tags": [], "media": {"bytes": 1}},
    {"id": "n1", "tags": [], "media": [{"bytes": 1.5e300, "derivatives": []}]},
    {"id": "n1", "tags": [], "workflows": [{"steps": [{"name": "x", "position": 1.0}]}]},
    {"id": "n1", "tags": [], "workflows": "none"},
])
def test_unknown_shapes_go_the_general_way(member: dict[str, Any]) -> None:
    same_as_general(node_bytes, member)


@pytest.mark.parametrize("edge", [
    {"source": "a", "target": "b", "relation": "r", "weight": 3.0},
    {"source": "a", "target": "b", "relation": "r", "weight": 1e21},
    {"source": "a", "target": "b", "relation": "r", "weight": True},
    {"source": "a", "target": "b", "relation": "r", "weight": 0.5, "note": "\U0001f600"},
    {"source": "a", "target": "b", "relation": "\ud800", "weight": 0.5},
])
def test_edges_the_fast_path_does_not_vouch_for(edge: dict[str, Any]) -> None:
    same_as_general(edge_bytes, edge)


def test_a_sandbox_node_is_written_as_canon_v1() -> None:
    node = {"id": "n0000000", "type": "note", "label": "Archive Vector", "domain": "research",
            "tags": ["vertex", "basalt"], "summary": "signal kernel.", "media": [
                {"url": "https://media.example/1.png", "mime": "image/png", "bytes": 5120,
                 "sha256": "ab" * 32, "derivatives": [
                     {"variant": "thumb", "url": "https://media.example/1t.png",
                      "width": 64, "height": 48}]}],
            "sources": ["https://source.example/b", "https://source.example/a"],
            "workflows": [{"name": "Retire", "status": "draft",
                           "steps": [{"name": "Mark deprecated", "status": "todo"}]}]}
    assert node_bytes(node) == canon.canonical_json(node)
    assert node_bytes(node).startswith(b'{"domain":"research","id":"n0000000"')
    assert b'"tags":["basalt","vertex"]' in node_bytes(node)
    assert b'"sources":["https://source.example/b","https://source.example/a"]' in node_bytes(node)
