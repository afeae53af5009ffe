"""The canon-v1 hashes of the shipped fixtures, pinned.

Computed with canon-v1's first implementation (the ``rfc8785`` package): any change of
implementation must leave every one of them unchanged, in memory and streamed. A fixture
whose content changes gets a new pin computed with that oracle (``rfc8785`` over
``canon.normalize``): the report summary's schema, when the deployment and change
control checks joined it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opsgate.clients import kb
from opsgate.verify import canon, drift

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures"

PINNED = {
    "constellation.json":
        "c2fa23582228127ce1640977dd3ab08ce885a25d7f76b9e7f21505809bb9dcd6",
    "contracts/admin-overview.schema.json":
        "fdf95c9685ee186b4610853da5c58c22940585012caae0f3a3b637c6e137e36a",
    "contracts/blob-history.schema.json":
        "df11814da2f4c49287a3fbe7e7cc76f01806f07b2ea7ff596e87f3299d7c1122",
    "contracts/constellation-api.schema.json":
        "3d10740b10009925af225651d21cc6be47c587342678c17212fb21c33aca53c7",
    "contracts/constellation-payload.schema.json":
        "dda6bbd5d449b054b45387d376beddb50cf491f91d2abab77aadc2fc0ad041ad",
    "contracts/report-summary.schema.json":
        "a152455942cfddf5de8f8f14a77e1223145c348b66fde5a38d9c27ef47f4d94e",
}
#: The graph part ({domains, edges, nodes}) of constellation.json.
CONSTELLATION_GRAPH = "2d7205522d0391e2c3c4b6298e8c06b5955babc8ed5d47f3993f4d013d372727"


def test_every_fixture_is_pinned() -> None:
    assert sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*.json")) == \
        sorted(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_fixture_document_hash_is_pinned(name: str) -> None:
    assert canon.document_hash(json.loads((FIXTURES / name).read_bytes())) == PINNED[name]


def test_constellation_streamed_hashes_are_pinned() -> None:
    path = FIXTURES / "constellation.json"
    full, graph, _ = drift.payload_from_file(path).hashes(chunk_size=3)
    assert (full, graph) == (PINNED["constellation.json"], CONSTELLATION_GRAPH)
    assert canon.document_hash(kb.graph_of(json.loads(path.read_bytes()))) == \
        CONSTELLATION_GRAPH
