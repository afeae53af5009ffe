"""Workflows end to end: the contract, the fixture, the generator, the kb tables filled by
the migrations (the sandbox, and a database backfilled before payloads had workflows),
and one canon-v1 hash for a payload whatever the order of its sets: streamed, in
memory, and read back from the kb."""

from __future__ import annotations

import copy
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opsgate.clients import contracts, kb
from opsgate.clients.schema import CONTRACT_TABLES, KB_DDL
from opsgate.config import Settings
from opsgate.migrate import MigrationContext
from opsgate.migrate.scripts import discover_scripts
from opsgate.sandbox import FIXTURE_PAYLOAD, Sandbox, datagen
from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.verify import canon, drift
from tests.migration_helpers import (
    MIGRATIONS,
    apply_all,
    cli,
    count,
    database_copy,
    ledger_rows,
    new_database,
)
from tests.strategies import payloads, shuffled

FIXTURE = json.loads(FIXTURE_PAYLOAD.read_text())
WORKFLOWS = "20260215_1005_legacy_to_neon_kb_workflows_backfill"


def _fixture_counts(doc: dict[str, Any]) -> tuple[int, int]:
    wfs = [w for n in doc["nodes"] for w in n.get("workflows", [])]
    return len(wfs), sum(len(w["steps"]) for w in wfs)


def _without_workflows(doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for n in out["nodes"]:
        n.pop("workflows", None)
    return out


# -- the contract, the fixture, the generator -------------------------------------------


def test_the_fixture_has_realistic_workflows_and_matches_the_contract() -> None:
    jsonschema.Draft202012Validator(contracts.schema("constellation-payload")).validate(FIXTURE)
    carriers = [n for n in FIXTURE["nodes"] if "workflows" in n]
    assert 0 < len(carriers) < len(FIXTURE["nodes"])
    assert {len(n["workflows"]) for n in carriers} == {1, 2, 3}
    steps = {len(w["steps"]) for n in carriers for w in n["workflows"]}
    assert min(steps) == 2 and max(steps) == 6
    assert {w["status"] for n in carriers for w in n["workflows"]} == {"draft", "active", "done"}


def test_the_fixture_is_what_the_seeded_generator_writes() -> None:
    """Regenerating fixtures/ (python -m opsgate.sandbox.datagen fixtures) changes nothing."""
    assert datagen.payload(360, per_node=1.2) == FIXTURE


def test_a_node_without_workflows_is_still_valid_and_an_empty_list_is_not() -> None:
    schema = contracts.schema("constellation-payload")
    validator = jsonschema.Draft202012Validator(schema)
    old_style = _without_workflows(FIXTURE)
    validator.validate(old_style)
    bad = copy.deepcopy(FIXTURE)
    bad["nodes"][0]["workflows"] = []
    assert not validator.is_valid(bad)
    bad["nodes"][0]["workflows"] = [{"name": "x", "status": "Not A Status", "steps": []}]
    assert not validator.is_valid(bad)


def test_the_generator_streams_workflows_at_scale(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    with path.open("w") as out:
        datagen.write_payload(out, 2000)
    reader = drift.payload_from_file(path)
    carriers = workflows = 0
    for node in reader.nodes():  # each node validated against the contract
        carriers += "workflows" in node
        workflows += len(node.get("workflows", []))
    assert 350 < carriers < 650 and workflows > carriers
    # Node i is the same whatever the graph's size: the fixture is a prefix.
    first = list(datagen.iter_nodes(360))
    assert first == FIXTURE["nodes"]


# -- the sandbox ----------------------------------------------------------------------------


def test_sandbox_fills_the_workflow_tables(sandbox: Sandbox) -> None:
    applied = {m["migration"]: m for m in sandbox.migrations}
    assert applied[WORKFLOWS]["status"] == "applied"
    url = sandbox.environ()["DATABASE_URL"]
    expected = _fixture_counts(FIXTURE)
    assert (count(url, "kb_workflows"), count(url, "kb_workflow_steps")) == expected
    assert all(n > 0 for n in expected)
    assert {"kb_workflows", "kb_workflow_steps"} <= set(CONTRACT_TABLES)
    with psycopg.connect(url, autocommit=True) as conn:
        graph = kb.read_graph(conn)
    assert canon.document_hash(graph) == canon.document_hash(kb.graph_of(FIXTURE))
    assert sum("workflows" in n for n in graph["nodes"]) == \
        sum("workflows" in n for n in FIXTURE["nodes"])


def test_the_api_serves_workflows(sandbox: Sandbox) -> None:
    import httpx

    body = httpx.get(sandbox.environ()["OPS_BASE_URL"] + "/api/constellation", timeout=30).json()
    jsonschema.Draft202012Validator(contracts.schema("constellation-api")).validate(body)
    served = {n["id"]: n.get("workflows") for n in body["nodes"]}
    assert served == {n["id"]: n.get("workflows") for n in FIXTURE["nodes"]}


def test_reading_nodes_can_stop_early(sandbox: Sandbox) -> None:
    """The workflows cursor's savepoint ends before the nodes' one, also when the reader
    of the nodes stops after one node."""
    with psycopg.connect(sandbox.environ()["DATABASE_URL"]) as conn:
        nodes = kb.iter_nodes(conn)
        assert next(nodes)["id"] == "n0000000"
        nodes.close()
        assert conn.execute("SELECT count(*) FROM kb_workflows").fetchone() == (
            _fixture_counts(FIXTURE)[0],)


# -- the migration on a database backfilled before workflows -------------------------------


@pytest.fixture(scope="module")
def pre_workflow_template(pg: EmbeddedPostgres,
                          tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """What production looks like: the four runbook migrations applied by the real CLI
    with a payload that had no workflows; then the payload is edited to have them.

    Built once per module (and worker) as a template database: each test gets a copy of
    it (``pre_workflow_db``), byte for byte what the four CLI runs wrote, instead of
    running them again (four interpreter starts, about 4 s a test). Nothing connects to
    the template after it is built, so PostgreSQL can copy it."""
    with new_database(pg, "wf_pre_template") as (name, url):
        blob = tmp_path_factory.mktemp("pre-workflow-blob")
        datagen.write_blob_folder(blob, "admin/", _without_workflows(FIXTURE))
        apply_all(url, blob)
        assert count(url, "kb_workflows") == 0
        _store_payload(url, FIXTURE)
        yield name


@pytest.fixture
def pre_workflow_db(pg: EmbeddedPostgres, pre_workflow_template: str) -> Iterator[str]:
    """A fresh copy of ``pre_workflow_template`` for one test; yields its URL."""
    with database_copy(pg, pre_workflow_template) as url:
        yield url


def _store_payload(url: str, doc: dict[str, Any]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE admin_content_state SET payload = %s WHERE key = 'constellation'",
                     (json.dumps(doc),))


def _drift(url: str) -> drift.DriftResult:
    with psycopg.connect(url, autocommit=True) as conn:
        return drift.compare(drift.payload_from_database(conn), conn, "db")


def test_workflow_backfill_fills_the_tables_then_is_a_noop(pre_workflow_db: str) -> None:
    url = pre_workflow_db
    before = _drift(url)
    assert before.counts.get("changed nodes") == sum("workflows" in n for n in FIXTURE["nodes"])

    code, out, err = cli(url, "run", WORKFLOWS)
    assert code == 0 and out["status"] == "planned", err
    assert count(url, "kb_workflows") == 0  # a dry run writes nothing

    code, out, err = cli(url, "run", WORKFLOWS, "--apply")
    assert code == 0 and out["status"] == "applied", err
    workflows, steps = _fixture_counts(FIXTURE)
    assert out["source_counts"] == {
        "nodes": 360, "nodes_with_workflows": sum("workflows" in n for n in FIXTURE["nodes"]),
        "workflows": workflows, "workflow_steps": steps}
    assert out["target_counts"]["after"]["kb_workflows"] == workflows
    assert out["target_counts"]["after"]["kb_workflow_steps"] == steps
    assert out["changes"]["kb_workflows"]["inserted"] == workflows
    members = [{"id": n["id"], **({"workflows": n["workflows"]} if "workflows" in n else {})}
               for n in FIXTURE["nodes"]]
    assert out["payload_hash"] == canon.document_hash({"nodes": members})
    after = _drift(url)
    assert not after.drifted, after.summary_lines()
    assert after.kb.graph_hash == canon.document_hash(kb.graph_of(FIXTURE))
    with psycopg.connect(url, autocommit=True) as conn:
        idx = conn.execute("SELECT indexdef FROM pg_indexes "
                           "WHERE indexname = 'kb_workflows_entity_idx'").fetchone()
        run = conn.execute("SELECT source, status FROM kb_provenance_runs "
                           "ORDER BY id DESC LIMIT 1").fetchone()
    assert idx is not None and "(entity_id, id)" in idx[0]
    assert run == ("admin_content_state:constellation#workflows", "succeeded")

    code, out, err = cli(url, "run", WORKFLOWS, "--apply")
    assert code == 0 and out["status"] == "noop", err
    # Another change of the payload is not this migration's: still a no-op.
    edited = copy.deepcopy(FIXTURE)
    edited["nodes"][0]["label"] = "Renamed"
    _store_payload(url, edited)
    code, out, err = cli(url, "run", WORKFLOWS, "--apply")
    assert code == 0 and out["status"] == "noop", err
    assert [r["name"] for r in ledger_rows(url)][-1] == WORKFLOWS


def test_changed_workflows_are_refused_then_forced(pre_workflow_db: str) -> None:
    url = pre_workflow_db
    assert cli(url, "run", WORKFLOWS, "--apply")[0] == 0
    edited = copy.deepcopy(FIXTURE)
    node = next(n for n in edited["nodes"] if "workflows" in n)
    node["workflows"][0]["steps"][0]["status"] = "blocked"
    gone = next(n for n in reversed(edited["nodes"]) if "workflows" in n)
    del gone["workflows"]
    _store_payload(url, edited)
    code, out, err = cli(url, "run", WORKFLOWS, "--apply")
    assert code == 1 and out["status"] == "refused", err
    code, out, err = cli(url, "run", WORKFLOWS, "--apply", "--force", "--reason", "INC-7")
    assert code == 0 and out["status"] == "applied", err
    assert not _drift(url).drifted
    assert count(url, "kb_workflows") == _fixture_counts(edited)[0]


def test_workflows_of_a_node_that_is_not_an_entity_fail_the_precondition(
    pre_workflow_db: str, tmp_path: Path
) -> None:
    doc = copy.deepcopy(FIXTURE)
    doc["nodes"].append({**next(n for n in doc["nodes"] if "workflows" in n), "id": "zz-new"})
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(doc))
    code, out, err = cli(pre_workflow_db, "run", WORKFLOWS, "--apply", "--source", str(path))
    assert code == 1 and out["status"] == "precondition-failed", err
    assert "1 payload node(s) with workflows are not kb entities" in out["message"]
    assert "zz-new" in out["message"]
    assert count(pre_workflow_db, "kb_workflows") == 0


def test_verify_reads_back_and_names_what_differs(pre_workflow_db: str) -> None:
    """Verify is honest: kb rows that differ from the payload after apply are named,
    node, place and both values."""
    (script,) = [s for s in discover_scripts(MIGRATIONS) if s.name == WORKFLOWS]
    module = script.load()
    settings = Settings.load(environ={"DATABASE_URL": pre_workflow_db})
    with psycopg.connect(pre_workflow_db) as conn:
        ctx = MigrationContext(conn, settings)
        plan = module.plan(ctx)
        module.apply(ctx, plan)
        assert module.verify(ctx, module.plan(ctx)) == []
        node = next(n for n in sorted(FIXTURE["nodes"], key=lambda n: n["id"])
                    if "workflows" in n)
        conn.execute("UPDATE kb_workflows SET status = 'tampered' WHERE id = (SELECT min(id) "
                     "FROM kb_workflows WHERE entity_id = %s)", (node["id"],))
        problems = module.verify(ctx, module.plan(ctx))
        conn.rollback()
    wf = node["workflows"][0]
    assert len(problems) == 2, problems
    assert problems[0].startswith("1 node(s) read back with other workflows")
    assert (f'{node["id"]} (workflows) workflows[0]({wf["name"]}).status: payload '
            f'"{wf["status"]}" vs kb "tampered"') in problems[0]


def test_replacing_workflows_leaves_other_nodes_alone(pre_workflow_db: str) -> None:
    with psycopg.connect(pre_workflow_db) as conn:
        written = kb.replace_workflows(conn, FIXTURE["nodes"])
        assert written == dict(zip(("kb_workflows", "kb_workflow_steps"),
                                   _fixture_counts(FIXTURE), strict=True))
        carriers = [n for n in FIXTURE["nodes"] if "workflows" in n]
        one = {"id": carriers[0]["id"], "workflows": [
            {"name": "Only", "status": "draft", "steps": [{"name": "s", "status": "todo"}]}]}
        assert kb.replace_workflows(conn, [one, {"id": carriers[1]["id"]}]) == {
            "kb_workflows": 1, "kb_workflow_steps": 1}
        back = {nid: wfs for nid, wfs in kb.iter_workflows(conn)}
        conn.rollback()
    assert back[carriers[0]["id"]] == one["workflows"]
    assert carriers[1]["id"] not in back
    assert {k: v for k, v in back.items() if k != carriers[0]["id"]} == {
        n["id"]: n["workflows"] for n in carriers[2:]}


# -- one hash: streamed == in memory == kb round trip ------------------------------------


@pytest.fixture(scope="module")
def kb_db(pg: EmbeddedPostgres) -> Iterator[str]:
    """A database with the kb tables; each example writes in a transaction it rolls back."""
    name = f"wf_roundtrip_{random.randrange(1 << 30)}"
    url = pg.create_database(name).reveal()
    with psycopg.connect(url, autocommit=True) as conn:
        for stmt in KB_DDL:
            conn.execute(stmt)
    yield url
    with pg.connect(autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads(exact_domains=True), st.randoms(use_true_random=False))
def test_streamed_in_memory_and_kb_round_trip_hashes_are_one(
    kb_db: str, payload: dict[str, Any], rnd: random.Random
) -> None:
    doc = shuffled(payload, rnd)
    expected = canon.document_hash(kb.graph_of(payload))
    data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    _, streamed, _ = drift.PayloadReader(lambda: io.BytesIO(data), "p").hashes(chunk_size=3)
    with psycopg.connect(kb_db) as conn:
        row = conn.execute("INSERT INTO kb_provenance_runs (source, input_hash, status) "
                           "VALUES ('test', 'x', 'running') RETURNING id").fetchone()
        assert row is not None
        kb.write_graph(conn, doc["nodes"], doc["edges"], int(row[0]))
        read_back = canon.document_hash(kb.read_graph(conn))
        kb_streamed = drift.kb_graph_hash(conn)
        result = drift.compare(drift.PayloadReader(lambda: io.BytesIO(data), "p"), conn, "p",
                               chunk_size=2)
        conn.rollback()
    assert streamed == expected == read_back == kb_streamed
    assert not result.drifted, result.summary_lines()
    assert result.payload.graph_hash == result.kb.graph_hash == expected
