"""canon-v1 bytes of one graph member (node or edge) of a known shape, fast.

`canon.canonical_json` walks every value of a document in Python before orjson writes
it, because in general any value may need what orjson does not do (a double written as
ECMAScript writes it, an integer folded, a key put in UTF-16 order, a set sorted). A
member of the constellation payload cannot hold most of that: the contract schema
(`fixtures/contracts/constellation-payload.schema.json`) fixes every key (ASCII, no
additional properties), every value is a string except four numbers, and the only set
is ``tags``. kb members are built from typed columns to the same shape. So the walk
reduces to looking at those numbers and sorting ``tags``: a node's bytes cost about a
tenth of the general walk (measured in `docs/performance.md`).

Precondition: the member passed the contract schema (the payload side validates every
member first) or was built by `opsgate.clients.kb` (typed columns). A number these
functions cannot vouch for, or a shape they do not know, goes the general way, so the
bytes are canon-v1's either way; tests/unit/test_canon_members.py proves them equal to
`canon.canonical_json` and to the ``rfc8785`` oracle.
"""

from __future__ import annotations

from typing import Any

import orjson

from opsgate.verify import canon

_SAFE_INT = 2**53 - 1
_SORT = orjson.OPT_SORT_KEYS
_dumps = orjson.dumps

NODE_KEYS = frozenset({"id", "type", "label", "domain", "tags", "summary", "media", "sources",
                       "workflows"})


def edge_bytes(edge: dict[str, Any]) -> bytes:
    """canon-v1 bytes of an edge (``source``, ``target``, ``relation`` strings and a
    number ``weight``). Called millions of times: the number test is inlined."""
    if type(edge) is dict and len(edge) == 4:
        w: Any = edge.get("weight")
        t = type(w)
        if (t is float and 1e-4 <= abs(w) < 1e16 and not w.is_integer()) or (
                t is int and -_SAFE_INT <= w <= _SAFE_INT):
            try:
                return _dumps(edge, option=_SORT)
            except TypeError:  # a lone surrogate: the general way says so as canon-v1 does
                pass
    return canon.canonical_json(edge)


def edge_row_bytes(row: tuple[str, str, str, Any]) -> bytes:
    """`edge_bytes` of a kb row ``(source, target, relation, weight)``, without a dict
    per edge in the common case (a double orjson writes as RFC 8785 does): the dict is
    built in canon-v1 key order, so orjson need not sort it."""
    s, t, r, w = row
    if type(w) is float and 1e-4 <= abs(w) < 1e16 and not w.is_integer():
        return _dumps({"relation": r, "source": s, "target": t, "weight": w})
    return edge_bytes({"source": s, "target": t, "relation": r, "weight": w})


def node_bytes(node: dict[str, Any]) -> bytes:
    """canon-v1 bytes of a node: its media's integers looked at, its tags sorted (a new
    dict if they are not in order; the input is not touched)."""
    if type(node) is not dict or not node.keys() <= NODE_KEYS:
        return canon.canonical_json(node)
    media = node.get("media")
    if media:
        if type(media) is not list:
            return canon.canonical_json(node)
        for m in media:
            if type(m) is not dict or not _plain_integer(m.get("bytes")):
                return canon.canonical_json(node)
            for d in m.get("derivatives") or ():
                if (type(d) is not dict or not _plain_integer(d.get("width"))
                        or not _plain_integer(d.get("height"))):
                    return canon.canonical_json(node)
    workflows = node.get("workflows")
    if workflows and not _plain_workflows(workflows):
        return canon.canonical_json(node)
    tags = node.get("tags")
    if type(tags) is not list:
        return canon.canonical_json(node)
    try:
        if len(tags) > 1:
            ordered = sorted(tags)
            if ordered != tags:
                node = {**node, "tags": ordered}
        return _dumps(node, option=_SORT)
    except TypeError:  # tags not all strings, a lone surrogate: the general way decides
        return canon.canonical_json(node)


def _plain_integer(value: Any) -> bool:
    return type(value) is int and -_SAFE_INT <= value <= _SAFE_INT


def _plain_workflows(workflows: Any) -> bool:
    """Workflows hold strings, except a step's ``position`` (kb members only, an int)."""
    if type(workflows) is not list:
        return False
    for w in workflows:
        if type(w) is not dict:
            return False
        for s in w.get("steps") or ():
            if type(s) is not dict or ("position" in s and not _plain_integer(s["position"])):
                return False
    return True
