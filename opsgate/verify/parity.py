"""Post-deploy parity: the constellation API against the knowledge graph in Postgres.

At scale the API answers with ~90 MB. It is fetched once per run, streamed to a spool
file (`fetch`), and read in one streamed pass (`scan`) that validates every node and
edge against the contract with the compiled validator and reduces the graph to what the
checks compare: counts, domains, dangling edges and order-independent digests of the
node ids and edge keys. The database gives the same figures in one statement
(`database_counts`). Only when the digests differ are both sides' ids read in full
(`differences`), to name what is missing where. Every result is small and JSON-able, so
one pytest-xdist worker computes it and the others read it (`shared`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import ijson
import psycopg
from filelock import FileLock

from opsgate import progress
from opsgate.clients import contracts
from opsgate.clients import web as http
from opsgate.clients.db import one_row
from opsgate.errors import HttpCheckError, NotTriedAgainError
from opsgate.verify import jsonsplit
from opsgate.verify.evidence import MAX_EXAMPLES, set_diff

API_PATH = "/api/constellation"
WHAT = "constellation API"
CONTRACT = "constellation-api"
#: Separator of an edge key's parts in its digest (cannot occur in an id).
UNIT = "\x1f"


_md5 = hashlib.md5
_from_bytes = int.from_bytes


def key_digest(key: str) -> int:
    """The first 8 bytes of the key's MD5 as a signed 64-bit integer: what
    ``('x' || left(md5(key), 16))::bit(64)::bigint`` gives in Postgres. Summed over a
    set of keys, it compares two sets without either side sending its keys."""
    return _from_bytes(_md5(key.encode()).digest()[:8], "big", signed=True)


def edge_key(source: str, target: str, relation: str) -> str:
    return f"{source}{UNIT}{target}{UNIT}{relation}"


@dataclass
class ApiScan:
    """What one pass over the API's answer found (JSON-able: shared between workers)."""

    error: str | None = None
    #: When the API was not asked because it did not answer earlier in the run: the
    #: line of that first failure (`NotTriedAgainError.first`).
    again_of: str | None = None
    bytes: int = 0
    nodes: int = 0
    edges: int = 0
    build: int = 0
    notes: int = 0
    node_domains: list[str] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    contract: list[str] = field(default_factory=list)
    bad_items: int = 0
    node_digest: int = 0
    edge_digest: int = 0
    dangling: int = 0
    dangling_examples: list[str] = field(default_factory=list)


@dataclass
class DbCounts:
    nodes: int
    edges: int
    build: int
    notes: int
    domains: list[str]
    node_digest: int
    edge_digest: int


@dataclass
class Parity:
    """Both sides and, when their digests differ, the named differences."""

    api: ApiScan
    db: DbCounts | None = None
    db_error: str | None = None
    node_differences: list[str] = field(default_factory=list)
    edge_differences: list[str] = field(default_factory=list)
    #: As `ApiScan.again_of`, for the database.
    db_again_of: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Parity:
        raw = json.loads(text)
        return cls(ApiScan(**raw["api"]), DbCounts(**raw["db"]) if raw["db"] else None,
                   raw["db_error"], raw["node_differences"], raw["edge_differences"],
                   raw.get("db_again_of"))


# -- the API side ---------------------------------------------------------------------


def fetch(client: httpx.Client, spool: Path) -> httpx.Response:
    """GET the API into ``spool`` (raises `HttpCheckError` for what is not a 2xx)."""
    with spool.open("wb") as out, progress.bar(f"fetch {API_PATH}", unit="B") as bar:
        resp = http.download(client, API_PATH, out, what=WHAT, on_chunk=bar.advance)
    return resp


def fetch_and_scan(client: httpx.Client, spool: Path) -> ApiScan:
    try:
        resp = fetch(client, spool)
    except HttpCheckError as exc:
        return ApiScan(error=str(exc), again_of=exc.first if isinstance(
            exc, NotTriedAgainError) else None)
    try:
        return scan(spool)
    except _NotJson as exc:
        with spool.open("rb") as f:
            start = f.read(200)
        return ApiScan(error=f"{http.not_json(resp, WHAT, start)}: {exc}")


class _NotJson(Exception):
    pass


class _Scanner:
    """The per-item work of `scan`, fed a batch at a time."""

    def __init__(self) -> None:
        self.out = ApiScan()
        self.node_check = contracts.ItemValidator(CONTRACT, "node")
        self.edge_check = contracts.ItemValidator(CONTRACT, "edge")
        self.ids: set[str] = set()
        self.domains: set[str | None] = set()
        #: Edges whose endpoints were not (yet) among the nodes seen: rechecked at the
        #: end, so edges served before nodes are judged against all of them.
        self.unresolved: list[tuple[str, str, str]] = []

    def _bad(self, kind: str, index: int, item: Any, found: list[str]) -> None:
        self.out.bad_items += 1
        if len(self.out.contract) < contracts.MAX_ERRORS:
            name = item.get("id") if kind == "node" and isinstance(item, dict) else None
            label = f"{kind} {index}" + (f" (id {name!r})" if isinstance(name, str) else "")
            self.out.contract.append(f"{label}: {found[0]}")

    def nodes(self, batch: list[Any]) -> None:
        """Validate, count and digest a batch of nodes. A valid node is known to carry
        string ``id``, ``type`` and ``domain``: the loop trusts them (it runs 1M times);
        an invalid one is reported and read with care."""
        out, ids, domains, valid = self.out, self.ids, self.domains, self.node_check.is_valid
        digest, index = out.node_digest, out.nodes
        checked = self.node_check.all_valid(batch)
        for n in batch:
            if not checked and not valid(n):
                found = self.node_check.problems(n, f"$['nodes'][{index}]")
                self._bad("node", index, n, found)
                if not (isinstance(n, dict) and isinstance(n.get("id"), str)):
                    index += 1
                    continue
                domain = n.get("domain")
                n = {"id": n["id"], "type": n.get("type"),
                     "domain": domain if isinstance(domain, str) and domain else None}
            index += 1
            nid, kind = n["id"], n["type"]
            ids.add(nid)
            digest += _from_bytes(_md5(nid.encode()).digest()[:8], "big", signed=True)
            if kind == "build":
                out.build += 1
            elif kind == "note":
                out.notes += 1
            domains.add(n["domain"])
        out.node_digest, out.nodes = digest, index

    def edges(self, batch: list[Any]) -> None:
        """Validate and digest a batch of edges; note those whose endpoints are not
        among the nodes read so far."""
        out, ids, valid = self.out, self.ids, self.edge_check.is_valid
        unresolved = self.unresolved
        digest, index = out.edge_digest, out.edges
        checked = self.edge_check.all_valid(batch)
        for e in batch:
            if not checked and not valid(e):
                found = self.edge_check.problems(e, f"$['edges'][{index}]")
                self._bad("edge", index, e, found)
                if not (isinstance(e, dict) and all(
                        isinstance(e.get(k), str) for k in ("source", "target", "relation"))):
                    index += 1
                    continue
            index += 1
            s, t, r = e["source"], e["target"], e["relation"]
            digest += _from_bytes(_md5(f"{s}{UNIT}{t}{UNIT}{r}".encode()).digest()[:8],
                                  "big", signed=True)
            if s not in ids or t not in ids:
                unresolved.append((s, t, r))
        out.edge_digest, out.edges = digest, index

    def finish(self, envelope: Any) -> ApiScan:
        """Dangling edges judged against all nodes; the envelope (the document with
        its arrays emptied) validated on its own."""
        out = self.out
        dangling = [(s, t, r) for s, t, r in self.unresolved
                    if s not in self.ids or t not in self.ids]
        out.dangling = len(dangling)
        out.dangling_examples = [f"{s} -[{r}]-> {t}" for s, t, r in dangling[:MAX_EXAMPLES]]
        out.node_domains = sorted(d for d in self.domains if d is not None)
        metadata = envelope.get("metadata") if isinstance(envelope, dict) else None
        if isinstance(metadata, dict):
            out.metadata = metadata
        envelope_problems = contracts.problems(CONTRACT, envelope)
        out.contract = (envelope_problems + out.contract)[:contracts.MAX_ERRORS]
        return out


def scan(spool: Path) -> ApiScan:
    """One streamed read of the API's answer: every node and edge validated against its
    contract definition as it is parsed, the envelope (metadata, the arrays' presence,
    anything else at the top) on its own. Memory holds the node ids (for dangling
    edges), never the document."""
    sc = _Scanner()
    total = spool.stat().st_size
    sc.out.bytes = total
    envelope: dict[str, Any] = {}
    document: Any = envelope
    batches: dict[str, list[Any]] = {"nodes": [], "edges": []}
    handlers = {"nodes": sc.nodes, "edges": sc.edges}
    with spool.open("rb") as f, progress.bar("validate constellation", total=total,
                                             unit="B") as bar:
        try:
            for key, kind, value in jsonsplit.members(f, ARRAYS, on_read=bar.advance):
                if kind == jsonsplit.ITEM:
                    batch = batches[key]
                    batch.append(value)
                    if len(batch) >= BATCH:
                        handlers[key](batch)
                        batch.clear()
                    continue
                for name, pending in batches.items():  # nodes before edges, or after
                    if pending:
                        handlers[name](pending)
                        pending.clear()
                if kind == jsonsplit.START:
                    envelope[key] = []
                elif kind == jsonsplit.VALUE:
                    envelope[key] = value
                else:
                    document = value
        except jsonsplit.JsonSplitError as exc:
            raise _NotJson(str(exc)) from None
    for name, pending in batches.items():
        handlers[name](pending)
    return sc.finish(document)


#: The members of the answer read item by item.
ARRAYS = frozenset({"nodes", "edges"})
#: Items handed to the validator at a time.
BATCH = 10_000


# -- the database side ----------------------------------------------------------------

_DIGEST = "coalesce(sum(('x' || left(md5({}), 16))::bit(64)::bigint), 0)"
COUNTS_SQL = (
    "SELECT e.nodes, g.edges, e.build, e.notes, e.domains, e.node_digest, g.edge_digest "
    "FROM (SELECT count(*) AS nodes, count(*) FILTER (WHERE kind = 'build') AS build, "
    "count(*) FILTER (WHERE kind = 'note') AS notes, "
    "coalesce(array_agg(DISTINCT domain ORDER BY domain), '{}') AS domains, "
    + _DIGEST.format("id") + " AS node_digest FROM kb_entities) e, "
    "(SELECT count(*) AS edges, "
    + _DIGEST.format("source_id || chr(31) || target_id || chr(31) || relation")
    + " AS edge_digest FROM kb_edges) g")


def database_counts(conn: psycopg.Connection[Any]) -> DbCounts:
    """Every figure the checks compare, in one statement (one round trip)."""
    row = one_row(conn.execute(COUNTS_SQL), "the database's counts")
    return DbCounts(int(row[0]), int(row[1]), int(row[2]), int(row[3]), list(row[4]),
                    int(row[5]), int(row[6]))


def _streamed(conn: psycopg.Connection[Any], query: str) -> Iterator[tuple[Any, ...]]:
    """Rows of ``query`` through a server-side cursor, a batch at a time."""
    with conn.cursor(name="opsgate_parity") as cur:
        cur.itersize = 50_000
        cur.execute(query)
        yield from cur


def differences(spool: Path, conn: psycopg.Connection[Any]) -> tuple[list[str], list[str]]:
    """Node ids and edges one side has and the other lacks (bounded examples). Called
    when the digests differ: it holds both sides' keys, which the digests avoid."""
    db_ids = {r[0] for r in _streamed(conn, "SELECT id FROM kb_entities")}
    db_edges = {(r[0], r[1], r[2]) for r in _streamed(
        conn, "SELECT source_id, target_id, relation FROM kb_edges")}
    api_ids: set[str] = set()
    api_edges: set[tuple[str, str, str]] = set()
    with spool.open("rb") as f:
        for n in ijson.items(f, "nodes.item", use_float=True):
            if isinstance(n, dict) and isinstance(n.get("id"), str):
                api_ids.add(n["id"])
    with spool.open("rb") as f:
        for e in ijson.items(f, "edges.item", use_float=True):
            if isinstance(e, dict):
                api_edges.add((str(e.get("source")), str(e.get("target")),
                               str(e.get("relation"))))
    return (set_diff("node ids", db_ids, api_ids, expected_name="database", actual_name="api"),
            set_diff("edges", db_edges, api_edges, expected_name="database", actual_name="api"))


# -- once per run ---------------------------------------------------------------------


def shared(folder: Path, compute: Callable[[Path], Parity]) -> Parity:
    """The run's parity result: computed by the first caller (``compute`` gets a spool
    path in ``folder``), read by the others, pytest-xdist workers included.

    The lock makes the other workers wait rather than fetch the API again; the spool is
    deleted as soon as the result is written, so at most one copy of the answer exists,
    and only while it is read."""
    folder.mkdir(parents=True, exist_ok=True)
    result = folder / "parity.json"
    with FileLock(folder / "parity.lock"):
        if result.exists():
            return Parity.from_json(result.read_text())
        spool = folder / "constellation.spool"
        try:
            parity = compute(spool)
        finally:
            spool.unlink(missing_ok=True)
        partial = result.with_suffix(".tmp")
        partial.write_text(parity.to_json())
        os.replace(partial, result)
        return parity
