"""Hypothesis strategies for JSON documents and constellation payloads."""

from __future__ import annotations

import copy
import random
from typing import Any

from hypothesis import strategies as st

# jsonb refuses NUL, and JSON text cannot carry lone surrogates.
text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
numbers = st.one_of(
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)
    ),
    max_leaves=20,
)

ids = st.text("abcdefghijklmnop0123456789-", min_size=1, max_size=8)
names = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                min_size=1, max_size=12)

steps = st.fixed_dictionaries({"name": names,
                               "status": st.sampled_from(["todo", "active", "done", "skipped"])})
workflow_lists = st.lists(
    st.fixed_dictionaries({"name": names,
                           "status": st.sampled_from(["draft", "active", "done"]),
                           "steps": st.lists(steps, max_size=6)}),
    min_size=1, max_size=3)


@st.composite
def payloads(draw: Any, exact_domains: bool = False) -> dict[str, Any]:
    """A small legacy constellation payload, valid against its contract, with set-valued
    parts (domains, tags, nodes by id, edges by key) and ordered ones (sources,
    workflows and their steps). Some nodes carry workflows, the others have no key.

    ``exact_domains``: ``domains`` lists exactly the domains the nodes use (what a kb
    read back can reproduce: its domains are those of its entities), in a drawn order.
    """
    node_ids = draw(st.lists(ids, min_size=1, max_size=8, unique=True))
    domains = draw(st.lists(st.sampled_from(["craft", "systems", "writing", "music"]),
                            min_size=1, max_size=4, unique=True))
    nodes = []
    for nid in node_ids:
        node = {
            "id": nid,
            "type": draw(st.sampled_from(["build", "note", "concept"])),
            "label": draw(text),
            "domain": draw(st.sampled_from(domains)),
            "tags": draw(st.lists(text, max_size=3, unique=True)),
            "summary": draw(text),
            "media": [],
            "sources": draw(st.lists(text, max_size=2, unique=True)),
        }
        if draw(st.booleans()):
            node["workflows"] = draw(workflow_lists)
        nodes.append(node)
    if exact_domains:
        used = {n["domain"] for n in nodes}
        domains = [d for d in domains if d in used]
    pairs = draw(st.lists(st.tuples(st.sampled_from(node_ids), st.sampled_from(node_ids),
                                    st.sampled_from(["relates", "builds-on"])),
                          max_size=8, unique=True))
    edges = [
        {"source": s, "target": t, "relation": r, "weight": draw(st.integers(1, 5))}
        for s, t, r in pairs
    ]
    return {"version": 1, "generatedAt": "2026-02-11T19:38:00.000Z", "domains": domains,
            "nodes": nodes, "edges": edges}


def shuffled(payload: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
    """A copy of ``payload`` with every array the contract calls a set in another order
    (domains, nodes, edges, each node's tags); ordered arrays are left alone."""
    doc = copy.deepcopy(payload)
    for key in ("domains", "nodes", "edges"):
        rnd.shuffle(doc[key])
    for node in doc["nodes"]:
        rnd.shuffle(node["tags"])
    return doc
