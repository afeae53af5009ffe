"""Reading a payload file: the envelope in any key order, bad JSON anywhere refused."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opsgate.clients import kb
from opsgate.errors import DriftInputError
from opsgate.sandbox import FIXTURE_PAYLOAD
from opsgate.verify import canon, drift, extsort
from tests.strategies import payloads


def _reader(data: bytes) -> drift.PayloadReader:
    return drift.PayloadReader(lambda: io.BytesIO(data), "payload")


@settings(max_examples=60)
@given(payloads(), st.permutations(["version", "generatedAt", "domains", "nodes", "edges"]))
def test_envelope_found_whatever_the_key_order(payload: dict[str, Any], order: list[str]
                                               ) -> None:
    """The header pass stops once the envelope is complete: also when the domains come
    after the graph, they are read whole."""
    data = json.dumps({k: payload[k] for k in order}, ensure_ascii=False).encode()
    header = _reader(data).header()
    assert header["domains"] == payload["domains"]
    assert (header["version"], header["generatedAt"]) == (payload["version"],
                                                          payload["generatedAt"])
    full, graph, _ = _reader(data).hashes(chunk_size=2)
    assert full == canon.document_hash(payload)
    assert graph == canon.document_hash(kb.graph_of(payload))


@pytest.mark.parametrize("tail", [b'{"source": "a",', b'{"source": "a"}}]}', b"]"])
def test_bad_json_after_a_complete_envelope_is_refused(tail: bytes) -> None:
    data = (b'{"version": 1, "generatedAt": "2026-02-11T19:38:00.000Z", "domains": ["a"], '
            b'"nodes": [], "edges": [' + tail)
    reader = _reader(data)
    assert reader.header()["domains"] == ["a"]  # the envelope alone is fine
    with pytest.raises(DriftInputError, match=r"not valid JSON|does not match"):
        reader.hashes()


def test_missing_envelope_parts_are_named() -> None:
    data = b'{"nodes": [], "edges": [], "version": 1}'
    with pytest.raises(DriftInputError, match="missing generatedAt, domains"):
        _reader(data).header()


ENVELOPE = b'"version": 1, "generatedAt": "2026-02-11T19:38:00.000Z", "domains": ["a"]'
NODE = b'{"id": "n1", "type": "note", "label": "L", "domain": "a", "tags": [], "summary": "", "media": [], "sources": []}'


@pytest.mark.parametrize(("data", "missing"), [
    (b"{" + ENVELOPE + b', "nodes": [' + NODE + b"]}", "edges"),
    (b"{" + ENVELOPE + b', "nodes": []}', "edges"),
    (b"{" + ENVELOPE + b', "edges": []}', "nodes"),
    (b'{"nodes": [' + NODE + b"], " + ENVELOPE + b"}", "edges"),
])
def test_graph_array_missing_past_the_envelope_is_named(data: bytes, missing: str) -> None:
    """The header pass stops at the first graph array; an array it did not reach and
    that yields nothing is looked for over the whole file, and its absence named."""
    reader = _reader(data)
    reader.header()
    with pytest.raises(DriftInputError, match=f"does not match its contract: missing {missing}"):
        reader.hashes()


def test_empty_arrays_past_the_envelope_are_fine() -> None:
    data = b"{" + ENVELOPE + b', "nodes": [' + NODE + b'], "edges": []}'
    _, _, counts = _reader(data).hashes()
    assert counts == {"nodes": 1, "edges": 0, "domains": 1}


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_records_are_compact_copies() -> None:
    """orjson's output buffers are 4 KiB at least; records must not keep them (a sort
    run of 50,000 edges held 200 MiB). 20,000 edges held: a few MiB, not 80."""
    edges = ({"source": f"n{i}", "target": "n2", "relation": "r", "weight": 0.5}
             for i in range(20_000))
    before = _rss_kib()
    held = list(drift.records(edges, drift.edge_key))
    grown_mib = (_rss_kib() - before) / 1024
    assert held[0] == (("n0", "n2", "r"), 0,
                       b'{"relation":"r","source":"n0","target":"n2","weight":0.5}')
    assert grown_mib < 20, grown_mib


@pytest.mark.parametrize("weight", [0.5, 0.1 + 0.2, 1.0, 3.0, 1e-5, 1e16, 2.0**53, -0.75, 1e21,
                                    123456.789])
def test_kb_edge_entries_are_the_members_bytes(weight: float) -> None:
    """The kb's edges are made into entries without a dict per edge: the same key and
    bytes as `canon_members.edge_bytes` and `canon.canonical_json`, for every kind of
    double (the fast case and the others)."""
    from opsgate.verify.canon_members import edge_bytes

    row = ("n1", "n\u00e92", "relates", weight)
    (key, seq, data), = drift.kb_edge_entries([row])
    edge = {"source": "n1", "target": "n\u00e92", "relation": "relates", "weight": weight}
    assert (key, seq) == (drift.edge_key(edge), 0)
    assert data == edge_bytes(edge) == canon.canonical_json(edge)


@pytest.mark.parametrize("first", ["nodes", "edges"])
def test_the_pass_over_the_earlier_array_ends_where_the_later_begins(
        first: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The later array is read in full first; the earlier one's pass stops at the later
    one's first item, not at the end of the file, and still finds every member."""
    from opsgate.verify import payload as payload_module

    doc = json.loads(FIXTURE_PAYLOAD.read_text())
    order = ["version", "generatedAt", "domains", first,
             "edges" if first == "nodes" else "nodes"]
    data = json.dumps({k: doc[k] for k in order}).encode()
    reads: list[tuple[int | None, int]] = []
    real = payload_module._Reader

    class Recording(real):  # type: ignore[misc, valid-type]
        def close(self) -> None:
            reads.append((self._limit, self.read_bytes))
            super().close()

    monkeypatch.setattr(payload_module, "_Reader", Recording)
    edges, nodes = _reader(data).graph_runs(tmp_path, chunk_size=50)
    got = {"edges": len(list(extsort.merge_runs(edges))),
           "nodes": len(list(extsort.merge_runs(nodes)))}
    assert got == {"edges": len(doc["edges"]), "nodes": len(doc["nodes"])}
    (full_limit, full_read), (cut_limit, cut_read) = reads[-2:]
    assert full_limit is None and full_read == len(data)
    assert cut_limit is not None and cut_read <= cut_limit < len(data)


def test_an_empty_later_array_needs_no_cut(tmp_path: Any) -> None:
    doc = json.loads(FIXTURE_PAYLOAD.read_text())
    data = json.dumps({"version": 1, "generatedAt": doc["generatedAt"],
                       "domains": doc["domains"], "nodes": doc["nodes"], "edges": []}).encode()
    edges, nodes = _reader(data).graph_runs(tmp_path, chunk_size=50)
    assert (len(list(extsort.merge_runs(edges))),
            len(list(extsort.merge_runs(nodes)))) == (0, len(doc["nodes"]))


def test_bad_json_in_the_earlier_array_is_refused() -> None:
    """The earlier array's own pass ends early, but the later array's full pass reads
    every byte first: a fault in the earlier array is still refused."""
    doc = json.loads(FIXTURE_PAYLOAD.read_text())
    text = json.dumps({"version": 1, "generatedAt": doc["generatedAt"],
                       "domains": doc["domains"], "nodes": doc["nodes"], "edges": doc["edges"]})
    broken = text.replace('"label": ', '"label" ', 1).encode()
    with pytest.raises(DriftInputError, match="not valid JSON"):
        _reader(broken).hashes()


def test_the_cycle_collector_runs_again_as_it_was() -> None:
    import gc

    from opsgate.verify.payload import cycle_collector_paused

    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError), cycle_collector_paused():
        assert not gc.isenabled()
        1 / 0  # noqa: B018 - the block fails
    assert gc.isenabled()
    gc.disable()
    try:
        with cycle_collector_paused():
            pass
        assert not gc.isenabled()  # it was paused before: it stays so
    finally:
        gc.enable()
