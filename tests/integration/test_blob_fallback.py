"""Blob fallback against the sandbox's blob server, each fault alone, through the gate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsgate.clients.blob import FileBlobStore, VercelBlobStore, open_admin_state
from opsgate.sandbox import FIXTURE_PAYLOAD, Sandbox, datagen
from opsgate.verify import canon, extsort
from opsgate.verify.blob_parity import blob_hash
from tests.gate_helpers import GateRun, clean_env, run_gate_here

#: Gate runs go through pytester in this process (verdicts, not processes).
pytestmark = pytest.mark.usefixtures("gate_in_process")

PREFIX = "admin/"
SELECTION = "blob_fallback or parity or ledger or preflight"



@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The sandbox with its blob objects restored and its faults cleared after each test."""
    content, history = datagen.admin_state(json.loads(FIXTURE_PAYLOAD.read_text()))
    yield sandbox
    sandbox.faults.clear()
    for pathname in [b.pathname for b in sandbox.bucket.listing("")]:
        sandbox.bucket.delete(pathname)
    sandbox.bucket.put(PREFIX + "content-state.json", json.dumps(content).encode())
    sandbox.bucket.put(PREFIX + "history.json", json.dumps(history).encode())


def gate(sb: Sandbox, tmp_path: Path, **env: str) -> GateRun:
    return run_gate_here(tmp_path, f"--env-file={sb.env_file}", "-m", SELECTION,
                    env=clean_env(**env))


def edit(sb: Sandbox, name: str, fn: Any) -> None:
    blob = sb.bucket.get(PREFIX + name)
    assert blob is not None
    doc = json.loads(blob.data)
    fn(doc)
    sb.bucket.put(PREFIX + name, json.dumps(doc).encode())


def only_blob_fails(run: GateRun, test: str, needle: str) -> None:
    assert run.failed_modules() == {"test_blob_fallback"}, run.failed()
    message = run.failed()[f"test_blob_fallback::{test}"]
    assert needle in message, message


def test_clean_blob_matches_neon(sb: Sandbox, tmp_path: Path) -> None:
    run = gate(sb, tmp_path)
    assert run.code == 0 and not run.failed(), run.stdout[-2000:]
    assert sb.expected_admin_hash  # the hash the migration recorded


def test_key_missing_from_blob(sb: Sandbox, tmp_path: Path) -> None:
    edit(sb, "content-state.json", lambda d: d.pop("homepage"))
    only_blob_fails(gate(sb, tmp_path), "test_blob_and_neon_hashes_match",
                    "keys missing in blob: homepage")


def test_stale_key(sb: Sandbox, tmp_path: Path) -> None:
    edit(sb, "content-state.json", lambda d: d["site-settings"].update(theme="older-theme"))
    only_blob_fails(gate(sb, tmp_path), "test_blob_and_neon_hashes_match",
                    "keys with a different payload: site-settings")


def test_extra_history_entry(sb: Sandbox, tmp_path: Path) -> None:
    edit(sb, "history.json", lambda d: d.append({
        "id": 99, "key": "homepage", "payload": {}, "action": "save", "actor": "admin",
        "createdAt": "2026-02-12T10:00:00Z"}))
    only_blob_fails(gate(sb, tmp_path), "test_blob_and_neon_hashes_match",
                    "history entries missing in neon: 99")


def test_listing_split_across_pages_still_matches(sb: Sandbox, tmp_path: Path) -> None:
    for i in range(23):
        sb.bucket.put(f"{PREFIX}attachments/{i:03d}.bin", b"x" * i)
    sb.faults.blob_page_limit = 4
    run = gate(sb, tmp_path)
    assert run.code == 0, run.failed()
    store = VercelBlobStore(sb.blob_token, sb.environ()["VERCEL_BLOB_API_URL"])
    names = [o.pathname for o in store.list(PREFIX)]
    assert len(names) == len(set(names)) == 25 and store.pages == 7  # 4 per page


def test_bad_token_is_401_and_never_printed(sb: Sandbox, tmp_path: Path) -> None:
    token = "vercel_blob_rw_canary_wrong_token_77"
    run = gate(sb, tmp_path, BLOB_READ_WRITE_TOKEN=token)
    only_blob_fails(run, "test_blob_state_is_complete_and_well_formed",
                    "refused BLOB_READ_WRITE_TOKEN (HTTP 401)")
    assert token not in run.stdout + run.stderr + json.dumps(run.outcomes)


def test_server_error(sb: Sandbox, tmp_path: Path) -> None:
    sb.faults.set("blob-500")
    only_blob_fails(gate(sb, tmp_path), "test_blob_state_is_complete_and_well_formed",
                    "HTTP 503")


@pytest.mark.usefixtures("quick_retries")
def test_timeout(sb: Sandbox, tmp_path: Path) -> None:
    """A blob API that accepts connections and then does not answer is slow, not
    unreachable: each blob check waits out its own attempts, once for all of its tests,
    and says how long it waited for a byte (only an origin that could not be connected
    to is not tried again in the run)."""
    sb.faults.set("blob-hang")
    sb.faults.hang_seconds = 1
    listed = sb.faults.served["blob list"]
    run = gate(sb, tmp_path, OPSGATE_HTTP_TIMEOUT="0.5")  # parity's own requests too
    # One listing of three attempts for the check's two tests (a listing each was six).
    assert sb.faults.served["blob list"] - listed == 3
    waited = "timed out (no byte of the answer for 0.5 s) after 3 attempts"
    only_blob_fails(run, "test_blob_state_is_complete_and_well_formed", waited)
    second = run.failed()["test_blob_fallback::test_blob_and_neon_hashes_match"]
    assert waited in second and "not tried again" not in second, second


def test_malformed_json(sb: Sandbox, tmp_path: Path) -> None:
    sb.bucket.put(PREFIX + "content-state.json", b'{"homepage": {"hero": ')
    only_blob_fails(gate(sb, tmp_path), "test_blob_state_is_complete_and_well_formed",
                    "admin/content-state.json: not valid JSON")


def test_file_backend_reads_the_same_layout(sb: Sandbox, tmp_path: Path) -> None:
    folder = tmp_path / "blobcopy"
    datagen.write_blob_folder(folder, PREFIX, json.loads(FIXTURE_PAYLOAD.read_text()))
    env = sb.environ()
    run = run_gate_here(tmp_path, "-m", "blob_fallback", env=clean_env(
        OPSGATE_BLOB_DIR=str(folder), DATABASE_URL=env["DATABASE_URL"]))
    assert run.code == 0 and len(run.outcomes) == 2, run.stdout[-2000:]


def test_without_database_url_the_check_is_partial_in_every_report(
    sb: Sandbox, tmp_path: Path
) -> None:
    """The runbook makes Neon parity optional: the check then passes, as partial, and
    every report says what it did not compare (not a plain "pass")."""
    env = sb.environ()
    run = run_gate_here(tmp_path, "-m", "blob_fallback", env=clean_env(
        BLOB_READ_WRITE_TOKEN=env["BLOB_READ_WRITE_TOKEN"],
        VERCEL_BLOB_API_URL=env["VERCEL_BLOB_API_URL"]))
    assert run.code == 0, run.stdout[-2000:]
    assert "opsgate: PARTIAL: " in run.stdout and "DATABASE_URL is not set" in run.stdout
    (run_dir,) = (tmp_path / "reports" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    (blob,) = [c for c in summary["checks"] if c["marker"] == "blob_fallback"]
    assert blob["status"] == "partial" and "Neon parity not compared" in blob["partial"][0]
    record = (run_dir / "drill-record.md").read_text()
    assert "Blob fallback verification: pass, PARTIAL (Neon parity not compared" in record
    html = (run_dir / "report.html").read_text()
    assert "Partial: Neon parity not compared" in html
    assert "Verdict: PASSED, PARTIAL (blob_fallback" in html
    assert summary["partial_checks"] == ["blob_fallback"]
    assert "Neon parity not compared (no DATABASE_URL)" in record and "MISMATCH" not in record


def test_a_changed_payload_shows_old_and_new_values(sb: Sandbox, tmp_path: Path) -> None:
    def retitle(doc: dict[str, Any]) -> None:
        doc["homepage"]["hero"] = "A title nobody approved"

    edit(sb, "content-state.json", retitle)
    run = gate(sb, tmp_path)
    message = run.failed()["test_blob_fallback::test_blob_and_neon_hashes_match"]
    assert ('homepage ($.hero: blob "A title nobody approved" vs neon "Builds, notes and '
            'the threads between them.")') in message, message


# -- history.json is streamed -----------------------------------------------------------


def test_a_truncated_history_is_not_valid_json(sb: Sandbox, tmp_path: Path) -> None:
    blob = sb.bucket.get(PREFIX + "history.json")
    assert blob is not None
    sb.bucket.put(PREFIX + "history.json", blob.data[: len(blob.data) // 2])
    only_blob_fails(gate(sb, tmp_path), "test_blob_state_is_complete_and_well_formed",
                    "admin/history.json: not valid JSON (parse error: premature EOF")


def test_a_history_that_is_no_list(sb: Sandbox, tmp_path: Path) -> None:
    sb.bucket.put(PREFIX + "history.json", b'  {"entries": []}')
    only_blob_fails(gate(sb, tmp_path), "test_blob_state_is_complete_and_well_formed",
                    "admin/history.json: expected a list of entries")


def test_a_history_entry_without_an_actor(sb: Sandbox, tmp_path: Path) -> None:
    edit(sb, "history.json", lambda d: d[-1].pop("actor"))
    _, history = datagen.admin_state(json.loads(FIXTURE_PAYLOAD.read_text()))
    only_blob_fails(gate(sb, tmp_path), "test_blob_state_is_complete_and_well_formed",
                    f"admin/history.json[{len(history) - 1}]: missing actor")


def test_a_history_out_of_id_order_still_matches(sb: Sandbox, tmp_path: Path) -> None:
    """canon-v1 orders history by id: a blob copy written in another order is the same
    state (read again through the external sort)."""
    edit(sb, "history.json", lambda d: d.reverse())
    run = gate(sb, tmp_path)
    assert run.code == 0 and not run.failed(), run.failed()


def test_the_streamed_hash_is_the_whole_document_hash(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Fed entry by entry, the hash equals canon-v1 of the whole document, for a
    history in id order and for one that is not (external sort, over several runs: the
    sort's chunk is made small rather than the history large)."""
    monkeypatch.setattr(extsort, "CHUNK", 1_000)
    spilled: list[int] = []
    spill = extsort._spill

    def counted(chunk: list[Any], *rest: Any) -> Path:
        spilled.append(len(chunk))
        return spill(chunk, *rest)

    monkeypatch.setattr(extsort, "_spill", counted)
    payload = json.loads(FIXTURE_PAYLOAD.read_text())
    content, history = datagen.admin_state(payload)
    extra = [{"id": 1000 + i, "key": "homepage", "payload": {"n": i, "tags": ["b", "a"]},
              "action": "save", "actor": "admin", "createdAt": "2026-02-12T10:00:00Z"}
             for i in range(4_500)]
    for entries in (history + extra, list(reversed(history + extra))):
        folder = tmp_path / f"blob-{len(list(tmp_path.iterdir()))}"
        (folder / PREFIX).mkdir(parents=True)
        (folder / PREFIX / "content-state.json").write_text(json.dumps(content))
        (folder / PREFIX / "history.json").write_text(json.dumps(entries))
        state = open_admin_state(FileBlobStore(folder), PREFIX)
        assert blob_hash(state) == (canon.admin_state_hash(content, entries), len(entries))
    assert len(spilled) >= 5, spilled  # the unordered history went through sorted runs


def test_differences_are_bounded_with_more_marked(sb: Sandbox, tmp_path: Path) -> None:
    edit(sb, "history.json", lambda d: d.extend({
        "id": 500 + i, "key": "homepage", "payload": {}, "action": "save", "actor": "admin",
        "createdAt": "2026-02-12T10:00:00Z"} for i in range(25)))
    run = gate(sb, tmp_path)
    message = run.failed()["test_blob_fallback::test_blob_and_neon_hashes_match"]
    assert ("history entries missing in neon: 500, 501, 502, 503, 504, 505, 506, 507, "
            "508, 509 …") in message, message
