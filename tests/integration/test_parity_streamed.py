"""Parity reads the API once per run and validates it as it streams: the request count
on the sandbox's reference app, a bad item deep in the answer, and the streamed scan on
a large answer written to a file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsgate.clients import web as http
from opsgate.sandbox import Sandbox
from opsgate.verify import parity
from tests.gate_helpers import clean_env, run_gate, run_gate_here

API = "/api/constellation"
PARITY_TESTS = 5  # the tests of checks/test_parity.py that read the API


@pytest.fixture
def clean(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.faults.clear()
    yield sandbox
    sandbox.faults.clear()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "two xdist workers"])
def test_the_api_is_fetched_once_per_run(clean: Sandbox, tmp_path: Path,
                                         workers: list[str]) -> None:
    before = clean.faults.served[API]
    run = run_gate(tmp_path, f"--env-file={clean.env_file}", "-m", "parity", *workers,
                   env=clean_env())
    assert run.code == 0, run.stdout[-3000:]
    passed = [k for k, (o, _) in run.outcomes.items() if o == "passed"]
    assert len(passed) == PARITY_TESTS + 1, run.outcomes  # and the admin overview
    assert clean.faults.served[API] - before == 1


@pytest.mark.usefixtures("gate_in_process")
def test_a_bad_node_deep_in_the_answer_is_named(clean: Sandbox, tmp_path: Path) -> None:
    clean.faults.set("api-bad-node-deep")
    run = run_gate_here(tmp_path, f"--env-file={clean.env_file}", "-m", "parity",
                   env=clean_env())
    assert run.failed_modules() == {"test_parity"}, run.failed()
    message = run.failed()["test_parity::test_response_has_the_contract_shape"]
    assert "does not match the contract: node " in message, message
    assert "['sha256']: 'not-a-sha256' does not match" in message, message
    # Every test that reads the API says why it cannot compare; the overview still runs.
    assert set(run.failed()) == {f"test_parity::{t}" for t in (
        "test_response_has_the_contract_shape", "test_node_and_edge_counts_aligned",
        "test_domains_aligned", "test_build_and_note_counts_aligned",
        "test_edge_endpoint_integrity")}


# -- the scan on its own, on answers written to a file ---------------------------------


def _node(i: int) -> dict[str, Any]:
    return {"id": f"n-{i:06d}", "type": "build" if i % 3 == 0 else "note",
            "label": f"Node {i}", "domain": f"d{i % 7}", "tags": ["a", "b"],
            "summary": "s", "media": [], "sources": [f"src-{i}"]}


def _answer(n: int, *, nodes_first: bool = True) -> dict[str, Any]:
    nodes = [_node(i) for i in range(n)]
    edges = [{"source": f"n-{i:06d}", "target": f"n-{(i + 1) % n:06d}", "relation": "r",
              "weight": 0.5} for i in range(n)]
    meta = {"domains": sorted({x["domain"] for x in nodes}),
            "counts": {"nodes": n, "edges": n, "build": sum(x["type"] == "build" for x in nodes),
                       "notes": sum(x["type"] == "note" for x in nodes)},
            "source": "kb", "generatedAt": None}
    if nodes_first:
        return {"nodes": nodes, "edges": edges, "metadata": meta}
    return {"metadata": meta, "edges": edges, "nodes": nodes}


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "answer.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_bad_item_deep_in_a_large_answer_is_caught_by_the_scan(tmp_path: Path) -> None:
    """Deep: in the fourth batch of each array, past three batches the scan has already
    validated and let go."""
    n = 3 * parity.BATCH + 5_000
    node, edge = 3 * parity.BATCH + 1_001, 3 * parity.BATCH + 1_500
    doc = _answer(n)
    doc["nodes"][node]["tags"] = ["x", "x"]  # uniqueItems
    del doc["edges"][edge]["weight"]
    found = parity.scan(_write(tmp_path, doc))
    assert found.nodes == found.edges == n and found.bytes > 5_000_000
    assert found.bad_items == 2
    assert found.contract[0].startswith(f"node {node} (id 'n-{node:06d}'): "
                                        f"$['nodes'][{node}]['tags']: "), found.contract
    assert "has non-unique elements" in found.contract[0], found.contract
    assert found.contract[1] == (f"edge {edge}: $['edges'][{edge}]: "
                                 "'weight' is a required property"), found.contract


def test_the_api_digests_equal_the_database_digests(clean: Sandbox, tmp_path: Path) -> None:
    """The shortcut is sound: on a clean target both sides' digests agree (else every
    run would read all ids again), and one missing node changes them."""
    assert clean.pg is not None
    spool = tmp_path / "spool"
    with http.client(clean.environ()["OPS_BASE_URL"]) as client:
        api = parity.fetch_and_scan(client, spool)
        clean.faults.set("api-missing-node")
        broken = parity.fetch_and_scan(client, spool)
    with clean.pg.connect("app") as conn:
        db = parity.database_counts(conn)
    assert api.error is None and api.nodes == db.nodes > 0
    assert (api.node_digest, api.edge_digest) == (db.node_digest, db.edge_digest)
    assert broken.node_digest != db.node_digest and broken.edge_digest != db.edge_digest


def test_edges_served_before_nodes_are_judged_against_all_nodes(tmp_path: Path) -> None:
    doc = _answer(1_000, nodes_first=False)
    doc["edges"].append({"source": "n-000001", "target": "ghost", "relation": "r",
                         "weight": 1})
    found = parity.scan(_write(tmp_path, doc))
    assert found.contract == [] and found.dangling == 1
    assert found.dangling_examples == ["n-000001 -[r]-> ghost"]


@pytest.mark.parametrize(("doc", "needle"), [
    ({"nodes": {}, "edges": [], "metadata": {}}, "$['nodes']: {} is not of type 'array'"),
    ({"edges": []}, "$: 'nodes' is a required property"),
    ([1, 2], "$: [1, 2] is not of type 'object'"),
    ({"nodes": [{"id": "a", "domain": [1]}], "edges": [], "metadata": {}},
     "node 0 (id 'a'): $['nodes'][0]: 'type' is a required property"),
])
def test_the_envelope_is_validated_on_its_own(tmp_path: Path, doc: Any, needle: str) -> None:
    found = parity.scan(_write(tmp_path, doc))
    assert needle in found.contract, found.contract
