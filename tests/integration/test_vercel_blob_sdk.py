"""The sandbox blob server and opsgate's blob client speak Vercel Blob's real protocol:
the official @vercel/blob SDK (from the npm registry) writes, lists with prefix and
cursor, and downloads; opsgate reads back what the SDK wrote, byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from opsgate.clients.blob import VercelBlobStore, read_admin_state
from opsgate.sandbox import FIXTURE_PAYLOAD, Sandbox, datagen
from opsgate.verify import canon
from tests.node_packages import VERCEL_BLOB, link_into

SDK_SCRIPT = r"""
import { put, list } from '@vercel/blob';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
const files = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const written = {};
for (const [pathname, b64] of Object.entries(files)) {
  const body = Buffer.from(b64, 'base64');
  const r = await put(pathname, body, { access: 'public', addRandomSuffix: false,
                                        allowOverwrite: true,
                                        contentType: 'application/octet-stream' });
  written[r.pathname] = r.url;
}
let cursor; const seen = []; let pages = 0;
do {
  const page = await list({ prefix: process.argv[3], limit: 2, cursor });
  pages += 1;
  seen.push(...page.blobs.map(b => ({ pathname: b.pathname, size: b.size, url: b.url })));
  cursor = page.hasMore ? page.cursor : undefined;
} while (cursor);
const downloaded = {};
for (const b of seen) {
  const data = Buffer.from(await (await fetch(b.url)).arrayBuffer());
  downloaded[b.pathname] = createHash('sha256').update(data).digest('hex');
}
console.log(JSON.stringify({ written, seen, pages, downloaded }));
"""


pytestmark = [pytest.mark.needs("node"),  # the official SDK runs on Node.js
              pytest.mark.npm(VERCEL_BLOB)]


@pytest.fixture(scope="module")
def sdk_dir(tmp_path_factory: pytest.TempPathFactory, node_packages: Path) -> Path:
    folder = tmp_path_factory.mktemp("vercel-blob-sdk")
    (folder / "package.json").write_text('{"name": "sdk-probe", "private": true, "type": "module"}')
    link_into(folder, node_packages)  # the run's one install (tests/node_packages.py)
    (folder / "probe.mjs").write_text(SDK_SCRIPT)
    return folder



def run_sdk(sdk_dir: Path, sb: Sandbox, files: dict[str, bytes]) -> dict[str, object]:
    import base64

    env = {**os.environ, "BLOB_READ_WRITE_TOKEN": sb.blob_token.reveal(),
           "VERCEL_BLOB_API_URL": sb.environ()["VERCEL_BLOB_API_URL"]}
    spec = sdk_dir / "files.json"
    spec.write_text(json.dumps({k: base64.b64encode(v).decode() for k, v in files.items()}))
    prefix = next(iter(files)).split("/", 1)[0] + "/"
    proc = subprocess.run(["node", "probe.mjs", str(spec), prefix], cwd=sdk_dir, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_sdk_put_list_download_and_opsgate_reads_it_back(sdk_dir: Path, sandbox: Sandbox) -> None:
    files = {f"sdk-test/file-{i}.bin": os.urandom(100 + 977 * i) for i in range(5)}
    files["sdk-test/unicode-ä.json"] = json.dumps({"ü": "✓"}, ensure_ascii=False).encode()
    out = run_sdk(sdk_dir, sandbox, files)
    written = out["written"]
    assert isinstance(written, dict) and sorted(written) == sorted(files)
    assert out["pages"] == 3  # six objects, two per page, cursor paging
    digests = {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}
    assert out["downloaded"] == digests

    store = VercelBlobStore(sandbox.blob_token, sandbox.environ()["VERCEL_BLOB_API_URL"],
                            page_limit=2)
    objects = list(store.list("sdk-test/"))
    assert store.pages == 3
    assert {o.pathname: hashlib.sha256(store.read(o)).hexdigest() for o in objects} == digests
    assert {o.pathname: o.size for o in objects} == {k: len(v) for k, v in files.items()}


def test_admin_state_written_by_the_sdk_hashes_like_the_source(sdk_dir: Path,
                                                               sandbox: Sandbox) -> None:
    content, history = datagen.admin_state(json.loads(FIXTURE_PAYLOAD.read_text()))
    content["homepage"]["sections"] = 6
    files = {"sdk-admin/content-state.json": json.dumps(content).encode(),
             "sdk-admin/history.json": json.dumps(history).encode()}
    run_sdk(sdk_dir, sandbox, files)
    store = VercelBlobStore(sandbox.blob_token, sandbox.environ()["VERCEL_BLOB_API_URL"])
    state = read_admin_state(store, "sdk-admin/")
    assert canon.admin_state_hash(state.content_state, state.history) == \
        canon.admin_state_hash(content, history)
