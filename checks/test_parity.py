"""Post-deploy parity (runbook): the live API against the database. Node and edge counts
aligned, domains aligned, build/note counts aligned, edge endpoint integrity, the
response's contract shape, and the admin overview counts after logging in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import allure
import httpx
import psycopg
import pytest

from opsgate.config import Settings
from opsgate.errors import HttpCheckError
from opsgate.pytest_plugin.fixtures import fail
from opsgate.target import contracts, db
from opsgate.target import web as http
from opsgate.target.schema import OVERVIEW_COUNTS
from opsgate.verify.evidence import bounded, count_lines, set_diff

pytestmark = pytest.mark.parity


@dataclass
class Fetched:
    body: Any = None
    error: str | None = None

    def require(self) -> Any:
        if self.error is not None:
            fail(self.error)
        return self.body


@pytest.fixture
def api(deployment: httpx.Client) -> Fetched:
    with allure.step("read: GET /api/constellation"):
        try:
            resp = http.request(deployment, "GET", "/api/constellation",
                                what="constellation API")
            return Fetched(http.expect_json(resp, what="constellation API"))
        except HttpCheckError as exc:
            return Fetched(error=str(exc))


@pytest.fixture
def shaped(api: Fetched) -> dict[str, Any]:
    body = api.require()
    found = contracts.problems("constellation-api", body)
    if found:
        fail("GET /api/constellation does not match the contract: " + "; ".join(found))
    result: dict[str, Any] = body
    return result


@dataclass
class DbGraph:
    node_ids: set[str]
    edge_keys: set[tuple[str, str, str]]
    domains: set[str]
    counts: dict[str, int]


@pytest.fixture
@allure.step("read: kb_entities and kb_edges")
def db_graph(target_db: psycopg.Connection[Any]) -> DbGraph:
    ids = {r[0] for r in target_db.execute("SELECT id FROM kb_entities")}
    edges = {(r[0], r[1], r[2]) for r in target_db.execute(
        "SELECT source_id, target_id, relation FROM kb_edges")}
    domains = {r[0] for r in target_db.execute("SELECT DISTINCT domain FROM kb_entities")}
    kinds = dict(target_db.execute(
        "SELECT kind, count(*) FROM kb_entities GROUP BY kind").fetchall())
    db.release(target_db)  # no transaction stays open while the API is compared
    return DbGraph(ids, edges, domains, {
        "nodes": len(ids), "edges": len(edges),
        "build": int(kinds.get("build", 0)), "notes": int(kinds.get("note", 0)),
    })


def test_response_has_the_contract_shape(shaped: dict[str, Any], evidence: dict[str, Any]
                                         ) -> None:
    evidence["metadata"] = shaped["metadata"]


def test_node_and_edge_counts_aligned(shaped: dict[str, Any], db_graph: DbGraph,
                                      evidence: dict[str, Any]) -> None:
    api_nodes = {n["id"] for n in shaped["nodes"]}
    api_edges = {(e["source"], e["target"], e["relation"]) for e in shaped["edges"]}
    meta = shaped["metadata"]["counts"]
    evidence["api"] = {"nodes": len(shaped["nodes"]), "edges": len(shaped["edges"]),
                       "metadata_counts": meta}
    evidence["database"] = db_graph.counts
    problems = count_lines({
        "nodes": (len(shaped["nodes"]), db_graph.counts["nodes"]),
        "edges": (len(shaped["edges"]), db_graph.counts["edges"]),
        "metadata.counts.nodes": (meta["nodes"], db_graph.counts["nodes"]),
        "metadata.counts.edges": (meta["edges"], db_graph.counts["edges"]),
    }, "api", "database")
    problems += set_diff("node ids", db_graph.node_ids, api_nodes,
                         expected_name="database", actual_name="api")
    problems += set_diff("edges", db_graph.edge_keys, api_edges,
                         expected_name="database", actual_name="api")
    evidence["differences"] = problems
    assert not problems, "API and database disagree: " + "; ".join(problems)


def test_domains_aligned(shaped: dict[str, Any], db_graph: DbGraph,
                         evidence: dict[str, Any]) -> None:
    api_domains = set(shaped["metadata"]["domains"])
    node_domains = {n["domain"] for n in shaped["nodes"]}
    evidence["api_domains"] = sorted(api_domains)
    evidence["database_domains"] = sorted(db_graph.domains)
    problems = set_diff("domains", db_graph.domains, api_domains,
                        expected_name="database", actual_name="api metadata")
    problems += set_diff("domains", db_graph.domains, node_domains,
                         expected_name="database", actual_name="api nodes")
    assert not problems, "domains differ: " + "; ".join(problems)


def test_build_and_note_counts_aligned(shaped: dict[str, Any], db_graph: DbGraph,
                                       evidence: dict[str, Any]) -> None:
    api_build = sum(1 for n in shaped["nodes"] if n["type"] == "build")
    api_notes = sum(1 for n in shaped["nodes"] if n["type"] == "note")
    meta = shaped["metadata"]["counts"]
    evidence["build"] = {"api": api_build, "metadata": meta["build"],
                         "database": db_graph.counts["build"]}
    evidence["notes"] = {"api": api_notes, "metadata": meta["notes"],
                         "database": db_graph.counts["notes"]}
    problems = count_lines({
        "build nodes": (api_build, db_graph.counts["build"]),
        "note nodes": (api_notes, db_graph.counts["notes"]),
        "metadata.counts.build": (meta["build"], db_graph.counts["build"]),
        "metadata.counts.notes": (meta["notes"], db_graph.counts["notes"]),
    }, "api", "database")
    assert not problems, "build/note counts differ: " + "; ".join(problems)


def test_edge_endpoint_integrity(shaped: dict[str, Any], evidence: dict[str, Any]) -> None:
    ids = {n["id"] for n in shaped["nodes"]}
    dangling = [e for e in shaped["edges"] if e["source"] not in ids or e["target"] not in ids]
    evidence["dangling_edges"] = len(dangling)
    examples = [f"{e['source']} -[{e['relation']}]-> {e['target']}" for e in bounded(dangling)]
    assert not dangling, (
        f"{len(dangling)} edge(s) in the API point at nodes it does not serve: "
        + ", ".join(examples)
    )


def test_admin_overview_counts_match_the_database(
    deployment: httpx.Client, ops_settings: Settings, target_db: psycopg.Connection[Any],
    evidence: dict[str, Any],
) -> None:
    password = ops_settings.require_admin_password()
    counts: dict[str, int] = {}
    rows = db.count_rows(target_db, [table for _, table in OVERVIEW_COUNTS])
    for label, table in OVERVIEW_COUNTS:
        counts[label] = rows[table] or 0
    db.release(target_db)  # the HTTP calls below run with no transaction open
    try:
        login = http.request(deployment, "POST", "/api/admin/session", what="admin login",
                             json={"password": password.reveal()})
        if login.status_code in (401, 403):
            fail("admin login refused ADMIN_PASSWORD (HTTP "
                        f"{login.status_code})")
        http.expect_json(login, what="admin login")
        resp = http.request(deployment, "GET", "/api/admin/overview", what="admin overview")
        body = http.expect_json(resp, what="admin overview")
    except HttpCheckError as exc:
        fail(str(exc))
    found = contracts.problems("admin-overview", body)
    assert not found, "admin overview does not match the contract: " + "; ".join(found)
    evidence["overview"] = body
    evidence["database"] = counts
    problems = count_lines({k: (body["counts"][k], v) for k, v in counts.items()},
                           "overview", "database")
    assert not problems, "admin overview counts differ: " + "; ".join(problems)
