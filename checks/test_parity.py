"""Post-deploy parity (runbook): the live API against the database. Node and edge counts
aligned, domains aligned, build/note counts aligned, edge endpoint integrity, the
response's contract shape, and the admin overview counts after logging in.

The API's answer (~90 MB at 100k entities) is fetched once per run, validated as it
streams, and reduced with the database's figures to one small result that every test
below reads, on every pytest-xdist worker (see opsgate.verify.parity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import allure
import httpx
import psycopg
import pytest

from opsgate.clients import contracts, db
from opsgate.clients import web as http
from opsgate.clients.schema import OVERVIEW_COUNTS
from opsgate.config import Settings
from opsgate.errors import (
    NOT_TRIED_AGAIN,
    HttpCheckError,
    MissingEnvError,
    NotTriedAgainError,
    first_line,
)
from opsgate.pytest_plugin.fixtures import fail, run_session
from opsgate.pytest_plugin.plugin import get_state
from opsgate.reports import failure_kinds
from opsgate.verify import parity as engine
from opsgate.verify.evidence import count_lines, set_diff
from opsgate.verify.evidence_parity import (
    ParityBuildNotes,
    ParityCounts,
    ParityDomains,
    ParityEndpoints,
    ParityOverview,
    ParityShape,
)
from opsgate.verify.evidence_types import EvidenceStore

pytestmark = pytest.mark.parity


def _run_folder(factory: pytest.TempPathFactory, config: pytest.Config) -> Path:
    """This run's temporary folder, the same for the controller and every xdist worker
    (a worker's base temp is a child of the controller's)."""
    base = factory.getbasetemp()
    return (base.parent if hasattr(config, "workerinput") else base) / "parity"


def _compute(settings: Settings, config: pytest.Config, spool: Path,
             sessions: dict[str, db.ReadOnlySession]) -> engine.Parity:
    state = get_state(config)
    try:
        base = settings.require_base_url()
    except MissingEnvError as exc:
        api = engine.ApiScan(error=str(exc))
    else:
        with allure.step(f"read: GET {engine.API_PATH} (once per run)"), \
                http.client(base, timeout=settings.http_timeout,
                            unreachable=state.unreachable) as client:
            api = engine.fetch_and_scan(client, spool)
    result = engine.Parity(api)
    try:
        # The run's read-only connection, which the tests' target_db hands on too.
        with run_session(settings, config, sessions) as conn, \
                allure.step("read: kb_entities and kb_edges (one statement)"):
            _read_database(result, conn, spool, settings)
    except pytest.fail.Exception as exc:  # a missing URL, or no connection: one line
        result.db_error = str(exc.msg)
        result.db_again_of = failure_kinds.again_of(exc)
    return result


def _read_database(result: engine.Parity, conn: psycopg.Connection[Any], spool: Path,
                   settings: Settings) -> None:
    api = result.api
    try:
        result.db = engine.database_counts(conn)
        if api.error is None and (result.db.node_digest, result.db.edge_digest) != (
                api.node_digest, api.edge_digest):
            result.node_differences, result.edge_differences = engine.differences(
                spool, conn)
    except psycopg.Error as exc:
        result.db = None
        result.db_error = ("reading kb_entities and kb_edges failed: "
                           + settings.redactor()(first_line(exc))[:300])


@pytest.fixture(scope="session")
def parity(ops_settings: Settings, pytestconfig: pytest.Config,
           tmp_path_factory: pytest.TempPathFactory,
           _read_only_sessions: dict[str, db.ReadOnlySession]) -> engine.Parity:
    return engine.shared(_run_folder(tmp_path_factory, pytestconfig),
                         lambda spool: _compute(ops_settings, pytestconfig, spool,
                                                _read_only_sessions))


#: Failures of an unreachable target that a parity test of this process has shown.
_SHOWN = pytest.StashKey[set[str]]()


def _once(message: str, again_of: str | None, config: pytest.Config) -> NoReturn:
    """The run's one attempt at the API and the database serves every parity test: after
    the first test shows that a target did not answer, the others say it was not tried
    again, as login and deployment do (only for a target that did not answer: an HTTP
    error or a contract break is no connection failure). ``again_of``: the first line,
    when the target was not asked at all because it did not answer an earlier check."""
    if again_of is not None:
        fail(message, NotTriedAgainError(message, again_of))
    if not any(cause in message for cause in get_state(config).unreachable.values()):
        fail(message)
    shown = config.stash.setdefault(_SHOWN, set())
    if message in shown:
        fail(message + NOT_TRIED_AGAIN, NotTriedAgainError(message + NOT_TRIED_AGAIN, message))
    shown.add(message)
    fail(message)


@pytest.fixture
def shaped(parity: engine.Parity, pytestconfig: pytest.Config) -> engine.ApiScan:
    """The API's figures, once the answer is known to match its contract."""
    api = parity.api
    if api.error is not None:
        _once(api.error, api.again_of, pytestconfig)
    if api.contract:
        more = (f" ({api.bad_items} item(s) in all)" if api.bad_items > len(api.contract)
                else "")
        fail(f"GET {engine.API_PATH} does not match the contract: "
             + "; ".join(api.contract) + more)
    return api


@pytest.fixture
def db_graph(parity: engine.Parity, pytestconfig: pytest.Config) -> engine.DbCounts:
    if parity.db is None:
        _once(parity.db_error or "the database was not read", parity.db_again_of, pytestconfig)
    return parity.db


@pytest.mark.opsgate_role("parity.shape")
def test_response_has_the_contract_shape(shaped: engine.ApiScan, evidence: EvidenceStore
                                         ) -> None:
    evidence.set(ParityShape(shaped.metadata, shaped.bytes))


@pytest.mark.opsgate_role("parity.counts")
def test_node_and_edge_counts_aligned(shaped: engine.ApiScan, db_graph: engine.DbCounts,
                                      parity: engine.Parity, evidence: EvidenceStore) -> None:
    assert shaped.metadata is not None
    meta = shaped.metadata["counts"]
    problems = count_lines({
        "nodes": (shaped.nodes, db_graph.nodes),
        "edges": (shaped.edges, db_graph.edges),
        "metadata.counts.nodes": (meta["nodes"], db_graph.nodes),
        "metadata.counts.edges": (meta["edges"], db_graph.edges),
    }, "api", "database")
    problems += parity.node_differences + parity.edge_differences
    evidence.set(ParityCounts(
        {"nodes": shaped.nodes, "edges": shaped.edges, "metadata_counts": meta},
        {"nodes": db_graph.nodes, "edges": db_graph.edges},
        {"node ids": shaped.node_digest == db_graph.node_digest,
         "edges": shaped.edge_digest == db_graph.edge_digest}, problems))
    if problems:
        fail("API and database disagree: " + "; ".join(problems))


@pytest.mark.opsgate_role("parity.domains")
def test_domains_aligned(shaped: engine.ApiScan, db_graph: engine.DbCounts,
                         evidence: EvidenceStore) -> None:
    assert shaped.metadata is not None
    api_domains = set(shaped.metadata["domains"])
    evidence.set(ParityDomains(sorted(api_domains), db_graph.domains))
    problems = set_diff("domains", set(db_graph.domains), api_domains,
                        expected_name="database", actual_name="api metadata")
    problems += set_diff("domains", set(db_graph.domains), set(shaped.node_domains),
                         expected_name="database", actual_name="api nodes")
    if problems:
        fail("domains differ: " + "; ".join(problems))


@pytest.mark.opsgate_role("parity.build_notes")
def test_build_and_note_counts_aligned(shaped: engine.ApiScan, db_graph: engine.DbCounts,
                                       evidence: EvidenceStore) -> None:
    assert shaped.metadata is not None
    meta = shaped.metadata["counts"]
    evidence.set(ParityBuildNotes(
        {"api": shaped.build, "metadata": meta["build"], "database": db_graph.build},
        {"api": shaped.notes, "metadata": meta["notes"], "database": db_graph.notes}))
    problems = count_lines({
        "build nodes": (shaped.build, db_graph.build),
        "note nodes": (shaped.notes, db_graph.notes),
        "metadata.counts.build": (meta["build"], db_graph.build),
        "metadata.counts.notes": (meta["notes"], db_graph.notes),
    }, "api", "database")
    if problems:
        fail("build/note counts differ: " + "; ".join(problems))


@pytest.mark.opsgate_role("parity.endpoints")
def test_edge_endpoint_integrity(shaped: engine.ApiScan, evidence: EvidenceStore) -> None:
    evidence.set(ParityEndpoints(shaped.dangling))
    if shaped.dangling:
        fail(
            f"{shaped.dangling} edge(s) in the API point at nodes it does not serve: "
            + ", ".join(shaped.dangling_examples)
        )


@pytest.mark.opsgate_role("parity.overview")
def test_admin_overview_counts_match_the_database(
    deployment: httpx.Client, ops_settings: Settings, target_db: psycopg.Connection[Any],
    evidence: EvidenceStore,
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
    if found:
        fail("admin overview does not match the contract: " + "; ".join(found))
    evidence.set(ParityOverview(body, counts))
    problems = count_lines({k: (body["counts"][k], v) for k, v in counts.items()},
                           "overview", "database")
    if problems:
        fail("admin overview counts differ: " + "; ".join(problems))
