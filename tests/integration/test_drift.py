"""Knowledge drift against a real sandbox: each fault alone, streamed hashes, bad input."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsgate.clients import kb
from opsgate.errors import DriftInputError, OpsgateError
from opsgate.sandbox import FIXTURE_PAYLOAD, Sandbox
from opsgate.verify import canon
from opsgate.verify.drift import (
    MAX_DIFFS,
    MAX_VALUE_CHARS,
    DriftResult,
    PayloadReader,
    compare,
    payload_from_database,
    payload_from_file,
)
from opsgate.verify.extsort import external_sorted
from tests.gate_helpers import clean_env, run_gate_here
from tests.waits import backends_gone_on

#: Gate runs go through pytester in this process (verdicts, not processes).
pytestmark = pytest.mark.usefixtures("gate_in_process")

FIXTURE = json.loads(FIXTURE_PAYLOAD.read_text())


@pytest.fixture
def ro(sandbox: Sandbox) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(sandbox.environ()["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = on")
        yield conn


@pytest.fixture(params=["this process", "second process"])
def payload_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the payload side runs: the fixture's payload is below
    `drift.SECOND_PROCESS_FROM`, so the second process is forced for it."""
    from opsgate.verify import drift

    if request.param == "second process":
        monkeypatch.setattr(drift, "SECOND_PROCESS_FROM", 0)
    return str(request.param)


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(doc, ensure_ascii=False))
    return path


def test_clean_graph_has_no_drift_and_streamed_hashes_equal_in_memory_ones(
    ro: psycopg.Connection[Any], payload_process: str,
) -> None:
    result = compare(payload_from_database(ro), ro, "db")
    assert not result.drifted, result.summary_lines()
    expected = canon.document_hash(kb.graph_of(FIXTURE))
    assert result.payload.graph_hash == result.kb.graph_hash == expected
    assert canon.document_hash(kb.read_graph(ro)) == expected
    assert (result.payload.nodes, result.payload.edges) == (360, 436)


def test_small_sort_chunks_give_the_same_answer(ro: psycopg.Connection[Any], tmp_path: Path,
                                               payload_process: str) -> None:
    doc = copy.deepcopy(FIXTURE)
    doc["nodes"].reverse()
    doc["edges"].reverse()
    result = compare(payload_from_file(write(tmp_path, doc)), ro, "file", chunk_size=37)
    assert not result.drifted
    assert result.payload.graph_hash == canon.document_hash(kb.graph_of(FIXTURE))


def test_external_sort_spills_and_merges() -> None:
    items = [{"k": (i * 7919) % 1000} for i in range(1000)]
    assert [x["k"] for x in external_sorted(items, key=lambda x: x["k"], chunk_size=64)] == \
        sorted(x["k"] for x in items)


def _mutate(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(FIXTURE)
    fn(doc)
    return doc


def _node(doc: dict[str, Any], i: int = 5) -> dict[str, Any]:
    node: dict[str, Any] = sorted(doc["nodes"], key=lambda n: n["id"])[i]
    return node


def _with_media(doc: dict[str, Any]) -> dict[str, Any]:
    return next(n for n in sorted(doc["nodes"], key=lambda n: n["id"]) if n["media"])


PAYLOAD_FAULTS: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("node missing from kb", lambda d: d["nodes"].append({**_node(d), "id": "zz-new-node"}),
     "nodes missing from kb", "zz-new-node"),
    ("label changed", lambda d: _node(d).update(label="Renamed Label"),
     "changed nodes", "(label)"),
    ("tag added", lambda d: _node(d)["tags"].append("zz-added-tag"), "changed nodes", "(tags)"),
    ("edge weight changed", lambda d: sorted(d["edges"], key=lambda e: e["source"])[0].update(
        weight=0.123456), "changed edges", "(weight)"),
    ("edge relation changed", lambda d: sorted(d["edges"], key=lambda e: e["source"])[0].update(
        relation="zz-relation"), "edges missing from kb", "-[zz-relation]->"),
    ("media sha256 changed", lambda d: _with_media(d)["media"][0].update(sha256="0" * 64),
     "changed nodes", "(media)"),
]


def test_domains_in_display_order_are_not_drift(ro: psycopg.Connection[Any],
                                                 tmp_path: Path) -> None:
    """canon-v1 sorts domains: the streamed hash of a payload listing them in display
    order is the in-memory one, and the kb's."""
    doc = _mutate(lambda d: d["domains"].sort(key=lambda x: (len(x), x), reverse=True))
    assert doc["domains"] != sorted(doc["domains"])
    result = compare(payload_from_file(write(tmp_path, doc)), ro, "file", chunk_size=50)
    assert not result.drifted, result.summary_lines()
    assert result.payload.graph_hash == result.kb.graph_hash == \
        canon.document_hash(kb.graph_of(FIXTURE))


def _with_workflows(doc: dict[str, Any], workflows: int = 1) -> dict[str, Any]:
    """The first node (by id) with at least ``workflows`` workflows."""
    return next(n for n in sorted(doc["nodes"], key=lambda n: n["id"])
                if len(n.get("workflows", [])) >= workflows)


def _without_workflows(doc: dict[str, Any]) -> dict[str, Any]:
    return next(n for n in sorted(doc["nodes"], key=lambda n: n["id"]) if "workflows" not in n)


N2 = _with_workflows(FIXTURE, 2)  # e.g. n0000010, with two or three workflows
W0, W_LAST = N2["workflows"][0], N2["workflows"][-1]
W1 = N2["workflows"][1]
S_LAST = W1["steps"][-1]
K_LAST = len(W1["steps"]) - 1
BARE = _without_workflows(FIXTURE)
EXTRA_WF = {"name": "Retire", "status": "draft",
            "steps": [{"name": "Mark deprecated", "status": "todo"},
                      {"name": "Redirect links", "status": "todo"}]}
EXTRA_STEP = {"name": "Announce", "status": "todo"}


def _wf_payload_fault(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda d: fn(_with_workflows(d, 2))


#: (name, change to the payload, node, text that must be in the message)
WORKFLOW_PAYLOAD_FAULTS: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("workflow status changed",
     _wf_payload_fault(lambda n: n["workflows"][0].update(status="archived")), N2["id"],
     f'workflows[0]({W0["name"]}).status: payload "archived" vs kb "{W0["status"]}"'),
    ("step renamed",
     _wf_payload_fault(lambda n: n["workflows"][1]["steps"][K_LAST].update(name="Renamed step")),
     N2["id"], f'workflows[1]({W1["name"]}).steps[{K_LAST}](Renamed step).name: payload '
     f'"Renamed step" vs kb "{S_LAST["name"]}"'),
    ("step status changed",
     _wf_payload_fault(lambda n: n["workflows"][1]["steps"][0].update(status="blocked")),
     N2["id"], f'workflows[1]({W1["name"]}).steps[0]({W1["steps"][0]["name"]}).status: '
     f'payload "blocked" vs kb "{W1["steps"][0]["status"]}"'),
    ("workflow missing from kb",
     _wf_payload_fault(lambda n: n["workflows"].append(EXTRA_WF)), N2["id"],
     f'workflows[{len(N2["workflows"])}](Retire): payload {{"name":"Retire","status":"draft",'),
    ("extra kb workflow", _wf_payload_fault(lambda n: n["workflows"].pop()), N2["id"],
     f'workflows[{len(N2["workflows"]) - 1}]({W_LAST["name"]}): payload (absent) vs kb '
     f'{{"name":"{W_LAST["name"]}"'),
    ("step missing from kb",
     _wf_payload_fault(lambda n: n["workflows"][1]["steps"].append(EXTRA_STEP)), N2["id"],
     f'workflows[1]({W1["name"]}).steps[{K_LAST + 1}](Announce): payload '
     '{"name":"Announce","status":"todo"} vs kb (absent)'),
    ("extra kb step", _wf_payload_fault(lambda n: n["workflows"][1]["steps"].pop()), N2["id"],
     f'workflows[1]({W1["name"]}).steps[{K_LAST}]({S_LAST["name"]}): payload (absent) vs kb '
     f'{{"name":"{S_LAST["name"]}","status":"{S_LAST["status"]}"}}'),
    ("workflows of a node missing from kb",
     lambda d: _without_workflows(d).update(workflows=[EXTRA_WF]), BARE["id"],
     'workflows: payload [{"name":"Retire","status":"draft","steps":[{"name":"Mark deprecated",'),
    ("extra kb workflows of a node",
     _wf_payload_fault(lambda n: n.pop("workflows")), N2["id"],
     "workflows: payload (absent) vs kb [{"),
]


def _assert_named(result: DriftResult, node: str, needle: str) -> None:
    assert result.drifted and result.counts == {"changed nodes": 1}, result.summary_lines()
    (example,) = result.examples["changed nodes"]
    assert example["key"] == node and example["fields"] == ["workflows"]
    assert 1 <= len(example["diffs"]) <= MAX_DIFFS
    for diff in example["diffs"]:
        assert len(diff["payload"]) <= MAX_VALUE_CHARS and len(diff["kb"]) <= MAX_VALUE_CHARS
    line = " | ".join(result.summary_lines())
    assert f"{node} (workflows) " in line and needle in line, line
    assert result.payload.graph_hash != result.kb.graph_hash


@pytest.mark.parametrize(("name", "fn", "node", "needle"), WORKFLOW_PAYLOAD_FAULTS,
                         ids=[f[0] for f in WORKFLOW_PAYLOAD_FAULTS])
def test_workflow_fault_in_the_payload_is_named(
    ro: psycopg.Connection[Any], tmp_path: Path, name: str,
    fn: Callable[[dict[str, Any]], None], node: str, needle: str
) -> None:
    result = compare(payload_from_file(write(tmp_path, _mutate(fn))), ro, "file")
    _assert_named(result, node, needle)


def _first_workflow_id(rw: psycopg.Connection[Any], node: str, index: int) -> int:
    row = rw.execute("SELECT id FROM kb_workflows WHERE entity_id = %s ORDER BY id "
                     "OFFSET %s LIMIT 1", (node, index)).fetchone()
    assert row is not None
    return int(row[0])


#: (name, SQL run against the kb with (node, workflow id) parameters, node, needle)
WORKFLOW_KB_FAULTS: list[tuple[str, str, str, str]] = [
    ("kb step status changed",
     "UPDATE kb_workflow_steps SET status = 'blocked' WHERE workflow_id = %(wf)s "
     "AND position = 0", N2["id"],
     f'workflows[1]({W1["name"]}).steps[0]({W1["steps"][0]["name"]}).status: payload '
     f'"{W1["steps"][0]["status"]}" vs kb "blocked"'),
    ("kb workflow renamed",
     "UPDATE kb_workflows SET name = 'Renamed' WHERE id = %(wf)s", N2["id"],
     f'workflows[1]({W1["name"]}).name: payload "{W1["name"]}" vs kb "Renamed"'),
    ("kb step deleted",
     f"DELETE FROM kb_workflow_steps WHERE workflow_id = %(wf)s AND position = {K_LAST}",
     N2["id"], f'workflows[1]({W1["name"]}).steps[{K_LAST}]({S_LAST["name"]}): payload '
     f'{{"name":"{S_LAST["name"]}","status":"{S_LAST["status"]}"}} vs kb (absent)'),
    ("kb extra step",
     f"INSERT INTO kb_workflow_steps (workflow_id, position, name, status) "
     f"VALUES (%(wf)s, {K_LAST + 1}, 'Extra', 'todo')", N2["id"],
     f'workflows[1]({W1["name"]}).steps[{K_LAST + 1}](Extra): payload (absent) vs kb '
     '{"name":"Extra","status":"todo"}'),
    ("kb extra workflow",
     "INSERT INTO kb_workflows (entity_id, name, status) VALUES (%(node)s, 'Extra', 'draft')",
     N2["id"], f'workflows[{len(N2["workflows"])}](Extra): payload (absent) vs kb '
     '{"name":"Extra","status":"draft","steps":[]}'),
    ("kb workflow deleted", "DELETE FROM kb_workflows WHERE id = %(wf)s", N2["id"],
     f'workflows[1]({W1["name"]}): payload {{"name":"{W1["name"]}"'),
    ("kb step position gap",
     f"UPDATE kb_workflow_steps SET position = {K_LAST + 10} WHERE workflow_id = %(wf)s "
     f"AND position = {K_LAST}", N2["id"],
     f'workflows[1]({W1["name"]}).steps[{K_LAST}]({S_LAST["name"]}).position: payload '
     f'(absent) vs kb {K_LAST + 10}'),
]


@pytest.mark.parametrize(("name", "statement", "node", "needle"), WORKFLOW_KB_FAULTS,
                         ids=[f[0] for f in WORKFLOW_KB_FAULTS])
def test_workflow_fault_in_the_kb_is_named(
    sandbox: Sandbox, ro: psycopg.Connection[Any], name: str, statement: str, node: str,
    needle: str
) -> None:
    url = sandbox.environ()["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as rw:
        rw.execute(statement, {"node": node, "wf": _first_workflow_id(rw, node, 1)})
        try:
            result = compare(payload_from_database(ro), ro, "db")
        finally:
            kb.replace_workflows(rw, [n for n in FIXTURE["nodes"] if n["id"] == node])
    _assert_named(result, node, needle)
    assert not compare(payload_from_database(ro), ro, "db").drifted  # restored


@pytest.mark.parametrize(("name", "fn", "kind", "needle"), PAYLOAD_FAULTS,
                         ids=[f[0] for f in PAYLOAD_FAULTS])
def test_payload_fault_is_reported(ro: psycopg.Connection[Any], tmp_path: Path, name: str,
                                   fn: Callable[[dict[str, Any]], None], kind: str,
                                   needle: str) -> None:
    result = compare(payload_from_file(write(tmp_path, _mutate(fn))), ro, "file")
    assert result.drifted
    assert kind in result.counts, result.summary_lines()
    assert needle in " | ".join(result.summary_lines())
    assert result.payload.graph_hash != result.kb.graph_hash


def test_extra_kb_entity_is_reported(sandbox: Sandbox, ro: psycopg.Connection[Any]) -> None:
    url = sandbox.environ()["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as rw:
        rw.execute("INSERT INTO kb_entities (id, kind, slug, title, domain) "
                   "VALUES ('zz-extra', 'note', 'zz-extra', 'Extra', 'craft')")
        try:
            result = compare(payload_from_database(ro), ro, "db")
        finally:
            rw.execute("DELETE FROM kb_entities WHERE id = 'zz-extra'")
    assert result.counts == {"extra kb nodes": 1}
    assert result.examples["extra kb nodes"] == ["zz-extra"]


def test_invalid_payload_is_a_clear_failure(ro: psycopg.Connection[Any], tmp_path: Path,
                                            payload_process: str) -> None:
    doc = _mutate(lambda d: _node(d).update(tags="not-a-list"))
    with pytest.raises(DriftInputError, match=r"does not match its contract: \$\['nodes'\]"):
        compare(payload_from_file(write(tmp_path, doc)), ro, "file")
    (tmp_path / "broken.json").write_text('{"version": 1, "nodes": [')
    with pytest.raises(DriftInputError, match=r"not valid JSON|does not match"):
        compare(payload_from_file(tmp_path / "broken.json"), ro, "file")


@pytest.mark.parametrize("fault", ["label changed", "invalid", "step status changed"])
def test_gate_fails_exactly_the_drift_check(sandbox: Sandbox, tmp_path: Path, fault: str) -> None:
    if fault == "invalid":
        doc = _mutate(lambda d: d["edges"][0].pop("weight"))
    elif fault == "step status changed":
        doc = _mutate(dict((f[0], f[1]) for f in WORKFLOW_PAYLOAD_FAULTS)[fault])
    else:
        doc = _mutate(lambda d: _node(d).update(label="Renamed Label"))
    path = write(tmp_path, doc)
    run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m",
                   "knowledge_drift or parity or ledger or preflight",
                   env=clean_env(OPSGATE_LEGACY_PAYLOAD_FILE=str(path)))
    assert run.failed_modules() == {"test_knowledge_drift"}, run.failed()
    message = next(iter(run.failed().values()))
    if fault == "invalid":
        assert "'weight' is a required property" in message
    elif fault == "label changed":
        assert "changed nodes" in message and "(label) label: payload \"Renamed Label\"" in message
    else:
        expected = dict((f[0], f[3]) for f in WORKFLOW_PAYLOAD_FAULTS)[fault]
        assert f"changed nodes, e.g. {N2['id']} (workflows) {expected}" in message


class _SlowFile:
    """A payload file on a slow disk: each read takes a while (the client is busy)."""

    def __init__(self, data: bytes, delay: float) -> None:
        import io

        self._buf, self._delay = io.BytesIO(data), delay

    def read(self, n: int = -1) -> bytes:
        import time

        time.sleep(self._delay)
        return self._buf.read(n)

    def close(self) -> None:
        self._buf.close()

    def __enter__(self) -> _SlowFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_drift_never_holds_a_transaction_idle_while_the_client_works(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With idle_in_transaction_session_timeout at 200 ms, a transaction left open while
    the client works is killed. Drift's client is made slow where it works: reading the
    payload (a slow disk) and merging (a pause of 0.5 s in the middle of each merge).
    Drift has no transaction open then: it copies the kb side in one quick snapshot
    between the two."""
    from opsgate.verify import drift
    from opsgate.verify.drift import PayloadReader

    merge = drift._merge

    def paused(items: Iterator[Any]) -> Iterator[Any]:
        import time

        for n, item in enumerate(items):
            if n == 10:
                time.sleep(0.5)
            yield item

    monkeypatch.setattr(drift, "_merge", lambda result, left, right, *rest: merge(
        result, paused(left), right, *rest))

    assert sandbox.pg is not None
    url = sandbox.environ()["DATABASE_URL"]
    with sandbox.pg.connect("app", autocommit=True) as admin:
        admin.execute("ALTER DATABASE app SET idle_in_transaction_session_timeout = '200ms'")
    try:
        with psycopg.connect(url) as victim:  # the fault is real on this server
            victim.execute("SELECT 1")
            with sandbox.pg.connect("app", autocommit=True) as admin:  # the server ends it
                backends_gone_on(admin, [victim.info.backend_pid])
            with pytest.raises((psycopg.errors.IdleInTransactionSessionTimeout,
                                psycopg.OperationalError)):
                victim.execute("SELECT 1")
        data = FIXTURE_PAYLOAD.read_bytes()
        slow = PayloadReader(lambda: _SlowFile(data, 0.05), "slow file")
        with psycopg.connect(url, autocommit=True) as conn:
            result = compare(slow, conn, "slow file")
        assert not result.drifted, result.summary_lines()
        assert result.timings_s["sort_payload"] > 0.6  # the client worked that long
        assert (result.kb.nodes, result.kb.edges) == (360, 436)
    finally:
        with sandbox.pg.connect("app", autocommit=True) as admin:
            admin.execute("ALTER DATABASE app RESET idle_in_transaction_session_timeout")


def test_payload_from_the_database_arrives_in_slices(
    sandbox: Sandbox, ro: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sliced by bytes (4 KiB: slices cut through UTF-8 sequences), the spooled payload is
    the payload's members envelope first, each byte for byte as jsonb prints it, and a
    doctored value in it is found and shown."""
    from opsgate.verify import drift

    monkeypatch.setattr(drift, "PAYLOAD_SLICE", 4096)
    reader = payload_from_database(ro)
    assert reader.path is not None
    row = ro.execute("SELECT ((payload - 'nodes') - 'edges')::text, (payload -> 'nodes')::text, "
                     "(payload -> 'edges')::text, payload FROM admin_content_state "
                     "WHERE key = 'constellation'").fetchone()
    assert row is not None and len(row[0]) > 2 and len(row[1]) > 4096
    envelope, nodes, edges, whole = row
    spooled = reader.path.read_bytes()
    assert spooled == (envelope[:-1] + f', "nodes": {nodes}, "edges": {edges}}}').encode()
    assert json.loads(spooled) == whole
    assert not compare(reader, ro, "db").drifted
    node = _node(FIXTURE)["id"]
    label = "Doctored é😂 " * 700  # longer than a slice
    with psycopg.connect(sandbox.environ()["DATABASE_URL"]) as rw:
        rw.execute("UPDATE admin_content_state SET payload = jsonb_set(payload, "
                   "ARRAY['nodes', (SELECT (i - 1)::text FROM jsonb_array_elements(payload->'nodes')"
                   " WITH ORDINALITY AS n(v, i) WHERE v->>'id' = %s), 'label'], to_jsonb(%s::text)) "
                   "WHERE key = 'constellation'", (node, label))
        doctored = payload_from_database(rw)
        rw.rollback()
    result = compare(doctored, ro, "db")
    assert result.counts == {"changed nodes": 1}, result.summary_lines()
    assert f"{node} (label) label: payload \"Doctored é😂 Doctored" in result.summary_lines()[0]


@pytest.mark.parametrize(("stored", "spooled", "refused"), [
    ("[1, 2]", b"[1, 2]", "missing version, generatedAt, domains, nodes, edges"),
    ('{"version": 3, "domains": [], "generatedAt": "x", "edges": []}',
     b'{"domains": [], "version": 3, "generatedAt": "x", "edges": []}', "missing nodes"),
    ('{"nodes": [], "edges": []}', b'{"nodes": [], "edges": []}',
     "missing version, generatedAt, domains"),
], ids=["no-object", "no-nodes", "no-envelope"])
def test_a_payload_of_the_wrong_shape_is_spooled_as_stored_and_refused(
    sandbox: Sandbox, stored: str, spooled: bytes, refused: str
) -> None:
    """The envelope-first spool keeps what is there and adds nothing: what is missing is
    named by the contract."""
    with psycopg.connect(sandbox.environ()["DATABASE_URL"]) as rw:
        rw.execute("UPDATE admin_content_state SET payload = %s::jsonb "
                   "WHERE key = 'constellation'", (stored,))
        reader = payload_from_database(rw)
        assert reader.path is not None and reader.path.read_bytes() == spooled
        with pytest.raises(DriftInputError, match=f"does not match its contract: {refused}$"):
            compare(reader, rw, "db")
        rw.rollback()


def test_missing_payload_row_names_the_alternative(sandbox: Sandbox) -> None:
    with psycopg.connect(sandbox.environ()["DATABASE_URL"]) as rw:
        rw.execute("DELETE FROM admin_content_state WHERE key = 'constellation'")
        with pytest.raises(DriftInputError, match="OPSGATE_LEGACY_PAYLOAD_FILE"):
            payload_from_database(rw)
        rw.rollback()


def test_each_item_is_canonicalised_once_per_side(
    ro: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One pass: the bytes a node or edge is canonicalised into serve the sort and the
    graph hash; nothing is encoded twice, and equal graph hashes end the comparison (no
    merge). The payload side runs here (a reader without a file), so it is counted."""
    from opsgate.verify import drift, payload

    calls = [0]

    def counting(real: Any) -> Any:
        def member(item: Any) -> bytes:
            calls[0] += 1
            return bytes(real(item))
        return member

    spooled = payload_from_database(ro)
    assert spooled.path is not None
    data = spooled.path.read_bytes()
    for module, names in ((drift, ("node_bytes",)), (payload, ("node_bytes", "edge_bytes"))):
        for name in names:
            monkeypatch.setattr(module, name, counting(getattr(module, name)))
    real_entries = drift.kb_edge_entries

    def counted_entries(rows: Any, bar: Any = None) -> Iterator[Any]:
        for entry in real_entries(rows, bar):  # the kb's edges, made without edge_bytes
            calls[0] += 1
            yield entry

    monkeypatch.setattr(drift, "kb_edge_entries", counted_entries)
    result = compare(PayloadReader(lambda: io.BytesIO(data), "p"), ro, "db", chunk_size=100)
    assert not result.drifted
    items = result.payload.nodes + result.payload.edges + result.kb.nodes + result.kb.edges
    assert calls[0] == items, (calls[0], items)
    assert "edges" not in result.timings_s and "nodes" not in result.timings_s  # no merge


def _payload_workers() -> list[str]:
    """Processes of ours still running drift's payload side (from /proc)."""
    import os

    found = []
    for stat in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = stat.read_bytes().replace(b"\0", b" ").decode()
            ppid = int((stat.parent / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and "_payload_worker" in cmd:
            found.append(cmd)
    return found


def _private_tempdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A temporary folder of this test's own (other workers run drift at the same time)."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize(("below", "second"), [(True, False), (False, True)],
                         ids=["below the threshold", "at the threshold"])
def test_the_second_process_starts_from_its_threshold(
        ro: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch, below: bool,
        second: bool) -> None:
    """A payload file smaller than `SECOND_PROCESS_FROM` is worked on in this process
    (no interpreter started for it); from that size on, in a second one. Same answer."""
    import subprocess

    from opsgate.verify import drift

    size = FIXTURE_PAYLOAD.stat().st_size
    monkeypatch.setattr(drift, "SECOND_PROCESS_FROM", size + 1 if below else size)
    started: list[list[str]] = []
    popen = subprocess.Popen

    def spy(args: list[str], *rest: Any, **kw: Any) -> subprocess.Popen[bytes]:
        started.append(list(args))
        return popen(args, *rest, **kw)

    monkeypatch.setattr(subprocess, "Popen", spy)
    result = compare(payload_from_file(FIXTURE_PAYLOAD), ro, "file")
    assert not result.drifted, result.summary_lines()
    assert result.payload.graph_hash == canon.document_hash(kb.graph_of(FIXTURE))
    workers = [a for a in started if "opsgate.verify._payload_worker" in a]
    assert len(workers) == (1 if second else 0), started


def test_a_payload_side_that_dies_is_one_clear_line(
        ro: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second process reads the payload's file by its path; here the path names no
    file (the header was read through the opener): the process dies, drift says how in
    one line, and leaves no folder behind."""
    data = FIXTURE_PAYLOAD.read_bytes()
    reader = PayloadReader(lambda: io.BytesIO(data), "payload p", tmp_path / "gone.json")
    private = _private_tempdir(monkeypatch, tmp_path)
    with pytest.raises(OpsgateError, match=r"the payload side of drift failed \(exit 1\): "
                                           r"FileNotFoundError: .*gone\.json") as err:
        compare(reader, ro, "p")
    assert "\n" not in str(err.value)
    assert not any(private.iterdir())


def test_a_small_payload_that_cannot_be_read_is_one_clear_line(
        ro: psycopg.Connection[Any], tmp_path: Path) -> None:
    """Below `SECOND_PROCESS_FROM` the payload side runs in this process: a file that
    fails to open (gone since it was named) is the same one line the second process
    gives, not an OSError escaping the check."""
    gone = tmp_path / "gone.json"
    reader = PayloadReader(lambda: gone.open("rb"), "payload p", FIXTURE_PAYLOAD)
    with pytest.raises(OpsgateError, match=r"^the payload side of drift failed: "
                                           r"FileNotFoundError: .*gone\.json") as err:
        compare(reader, ro, "p")
    assert "\n" not in str(err.value)


def test_a_kb_side_that_fails_stops_the_payload_side(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kb read fails (the tables are not there): the second process is stopped, its
    folder removed, and the error is the database's."""
    from opsgate.verify import drift

    with psycopg.connect(sandbox.environ()["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE SCHEMA empty_kb")
        try:
            conn.execute("SET search_path = empty_kb")
            private = _private_tempdir(monkeypatch, tmp_path)
            monkeypatch.setattr(drift, "SECOND_PROCESS_FROM", 0)  # the fixture's is smaller
            with pytest.raises(psycopg.errors.UndefinedTable):
                compare(payload_from_file(FIXTURE_PAYLOAD), conn, "file")
            assert not _payload_workers()
            assert not any(private.iterdir())
        finally:
            conn.execute("RESET search_path")
            conn.execute("DROP SCHEMA empty_kb")


def test_sources_keep_their_order_whatever_the_database_collation(sandbox: Sandbox) -> None:
    """A node's sources keep the payload's order (kept in ``body``) only if the relational
    rows are read in the order Python sorts in. With the column in an ICU collation,
    "a-src" sorts before "B-src", in code point order after it: the kb read must not care.
    (All in one transaction, rolled back.)"""
    with psycopg.connect(sandbox.environ()["DATABASE_URL"]) as conn:
        if conn.execute("SELECT 1 FROM pg_collation WHERE collname = 'en-x-icu'").fetchone() is None:
            pytest.skip("this server was built without ICU: no collation 'en-x-icu'")
        entity = conn.execute("SELECT id FROM kb_entities ORDER BY id LIMIT 1").fetchone()
        assert entity is not None
        run = conn.execute("SELECT min(id) FROM kb_provenance_runs").fetchone()
        assert run is not None
        conn.execute("DELETE FROM kb_entity_sources WHERE entity_id = %s", entity)
        for ref in ("a-src", "B-src"):
            conn.execute("INSERT INTO kb_entity_sources (entity_id, provenance_run_id, "
                         "source_ref) VALUES (%s, %s, %s)", (entity[0], run[0], ref))
        conn.execute("UPDATE kb_entities SET body = jsonb_set(COALESCE(body, '{}'), "
                     "'{sources}', '[\"B-src\", \"a-src\"]') WHERE id = %s", entity)

        def sources() -> list[str]:
            node = next(n for n in kb.iter_nodes(conn) if n["id"] == entity[0])
            return list(node["sources"])

        assert sources() == ["B-src", "a-src"]
        conn.execute('ALTER TABLE kb_entity_sources ALTER COLUMN source_ref TYPE text '
                     'COLLATE "en-x-icu"')
        assert sources() == ["B-src", "a-src"]
        conn.rollback()


def test_edges_come_in_code_point_order_whatever_the_column_collation(
        sandbox: Sandbox) -> None:
    """Where the key columns sort by code point by themselves, the kb is read in index
    order (no sort); a column in another collation is read with COLLATE "C". Either way
    the order is Python's: "B-rel" before "a-rel". (One transaction, rolled back.)"""
    with psycopg.connect(sandbox.environ()["DATABASE_URL"]) as conn:
        if conn.execute("SELECT 1 FROM pg_collation WHERE collname = 'en-x-icu'").fetchone() is None:
            pytest.skip("this server was built without ICU: no collation 'en-x-icu'")
        pair = conn.execute("SELECT source_id, target_id FROM kb_edges LIMIT 1").fetchone()
        assert pair is not None
        for relation in ("a-rel", "B-rel"):
            conn.execute("INSERT INTO kb_edges (source_id, target_id, relation, weight) "
                         "VALUES (%s, %s, %s, 0.5)", (*pair, relation))

        def relations() -> list[str]:
            return [e["relation"] for e in kb.iter_edges(conn)
                    if (e["source"], e["target"]) == pair and e["relation"].endswith("-rel")]

        assert str(kb.order_by(conn, "kb_edges", "x", ["relation"]).as_string(conn)) in (
            '"x"."relation"', '"x"."relation" COLLATE "C"')
        assert relations() == ["B-rel", "a-rel"]
        conn.execute('ALTER TABLE kb_edges ALTER COLUMN relation TYPE text COLLATE "en-x-icu"')
        assert kb.order_by(conn, "kb_edges", "x", ["relation"]).as_string(conn) == (
            '"x"."relation" COLLATE "C"')
        assert relations() == ["B-rel", "a-rel"]
        conn.rollback()


def test_the_kb_reads_the_same_through_a_server_side_cursor(
        ro: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows stream in libpq's chunked mode from libpq 17 on; with an older libpq the same
    rows come through a server-side cursor."""
    with ro.transaction():
        streamed = (list(kb.iter_nodes(ro)), list(kb.iter_edge_rows(ro)))
    monkeypatch.setattr(psycopg.pq, "version", lambda: 160000)
    with ro.transaction():
        assert (list(kb.iter_nodes(ro)), list(kb.iter_edge_rows(ro))) == streamed
    assert len(streamed[0]) == 360 and len(streamed[1]) == 436
    assert any("workflows" in n for n in streamed[0])


@pytest.mark.parametrize("side", ["edges", "nodes"])
def test_a_stop_while_a_kb_stream_waits_ends_the_snapshot(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, side: str) -> None:
    """The gate's stop (KeyboardInterrupt) raised in drift's consumer while a kb stream
    waits at its yield: the stream held the connection's lock, and the snapshot's
    rollback waited for it forever (a stopped gate hung until CI's SIGKILL, its reports
    never written). Run in a thread, so a hang fails the test instead of the suite."""
    import threading

    from opsgate.verify import drift

    def stopping(rows: Any, *args: Any) -> Iterator[Any]:
        for _ in rows:
            raise KeyboardInterrupt  # the stop, one row into the stream
        yield from ()

    if side == "edges":
        monkeypatch.setattr(drift, "kb_edge_entries", stopping)
    else:
        real = drift.records  # the edges' entries are records too: stop the nodes' only
        monkeypatch.setattr(drift, "records", lambda rows, key, *args: (
            stopping(rows) if key is drift.node_key else real(rows, key, *args)))
    url = sandbox.environ()["DATABASE_URL"]
    seen: dict[str, Any] = {}

    def run() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            try:
                compare(payload_from_database(conn), conn, "db")
            except KeyboardInterrupt:
                seen["stopped"] = True
            seen["status"] = conn.info.transaction_status
            seen["after"] = conn.execute("SELECT 1").fetchone()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "compare hung after the stop (the rollback waited)"
    assert seen == {"stopped": True, "status": psycopg.pq.TransactionStatus.IDLE,
                    "after": (1,)}, seen
