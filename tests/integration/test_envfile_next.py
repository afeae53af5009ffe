"""opsgate reads env files to exactly the values the app gets: files written the way
``vercel env pull`` writes them (and by hand, the way dotenv allows) are read by
Next.js's own ``@next/env`` (``loadEnvConfig``, from the npm registry, pinned) under
Node and by opsgate, under the same environment, and compared value for value."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from opsgate.config import Settings, read_env_file
from opsgate.errors import ConfigError
from tests.node_packages import NEXT_ENV, link_into

pytestmark = pytest.mark.npm(NEXT_ENV)

#: loadEnvConfig as `next start` calls it (production mode reads .env.production.local
#: first); every key of the resulting process.env, and anything it logged as an error.
PROBE = r"""
const { loadEnvConfig } = require('@next/env');
const errors = [];
const log = { info() {}, warn() {}, error(...a) { errors.push(a.map(String).join(' ')); } };
const { combinedEnv } = loadEnvConfig(process.argv[2], false, log);
process.stdout.write(JSON.stringify({ env: { ...combinedEnv }, errors }));
"""

#: The same for many app folders in one Node process (forceReload: each from the
#: environment the process started with).
PROBE_MANY = r"""
const { loadEnvConfig } = require('@next/env');
const out = [];
for (const dir of process.argv.slice(2)) {
  const errors = [];
  const log = { info() {}, warn() {}, error(...a) { errors.push(a.map(String).join(' ')); } };
  const { combinedEnv } = loadEnvConfig(dir, false, log, true);
  out.push({ env: { ...combinedEnv }, errors });
}
process.stdout.write(JSON.stringify(out));
"""

#: The environment both readers see: names the files refer to, set, empty and holding
#: "$" and "\$" of their own (for @next/env the environment wins, and is expanded).
ENVIRON = {
    "FROM_ENV": "env-value",
    "EMPTY_ENV": "",
    "SHARED": r"env-$FROM_ENV-\$kept",
    "SHARED_PLAIN": "env-plain",
}

PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "k3J+/Z9yQ==\n-----END PRIVATE KEY-----\n")

#: Values as the Vercel dashboard holds them; the file gets them the CLI's way.
VERCEL_VALUES = {
    "DATABASE_URL": "postgres://app:s3cr%40t@ep-cool-1-pooler.eu-central-1.aws.neon.tech/"
                    "neondb?sslmode=require",
    "ADMIN_STORAGE_BACKEND": "neon",
    "ADMIN_PASSWORD": "pa$$word with $FROM_ENV and \\$escaped",
    "PRIVATE_KEY": PEM,
    "CRLF_VALUE": "line1\r\nline2",
    "QUOTES": "say \"hi\", 'bye' and `tick`",
    "ENDS_IN_QUOTE": 'ends "quoted"',
    "HASHES": "a#b # c #",
    "EQUALS": "a=b==c=",
    "UNICODE": "ünïcødé ✓ 𝄞 日本",
    "BACKSLASHES": "C:\\temp\\new\\table\\",
    "LITERAL_BACKSLASH_N": "not\\na newline",
    "DEFINED_EARLIER": "${ADMIN_STORAGE_BACKEND}-and-$ADMIN_STORAGE_BACKEND",
    "DEFINED_LATER": "$UNICODE",
    "FROM_ENVIRONMENT": "x-${FROM_ENV}-$FROM_ENV",
    "EMPTY_IN_ENV": "[$EMPTY_ENV]",
    "UNDEFINED": "a $NOT_DEFINED_ANYWHERE b ${ALSO_NOT}c",
    "ESCAPED": "\\$FROM_ENV and \\${FROM_ENV}",
    "DEFAULTS": "${NOT_DEFINED:-fallback} ${FROM_ENV:-unused} ${UNICODE:-wins}",
    "TRAILING_DOLLAR": "costs 5$",
    "DOLLAR_FIRST": "$5 and $FROM_ENV then $",
    "REPLACEMENT_PATTERNS": "$QUOTES_AS_REF",
    "QUOTES_AS_REF": "a$&b$$c",
    "EMPTY": "",
    "SHARED": "file-value",
    "SHARED_PLAIN": "file-plain",
    "__NEXT_PROCESSED_ENV": "from-file",
}

#: What dotenv accepts besides the CLI's own lines (one line per feature).
HAND_WRITTEN = [
    "# a comment line",
    "   # an indented comment",
    "",
    "SINGLE='single $FROM_ENV \"double\" inside'",
    "BACKTICK=`backtick 'single' \"double\"`",
    "DOUBLE_ESCAPED_QUOTE=\"a \\\"quoted\\\" word\"",
    "SINGLE_INSIDE='it's'",
    "UNQUOTED=  spaced value   # a comment after",
    "UNQUOTED_HASH=value#not-a-comment-in-node",
    "QUOTED_HASH=\"value # kept\" # dropped",
    "EMPTY_UNQUOTED=",
    "EMPTY_SINGLE=''",
    "export EXPORTED=yes",
    "COLON: colon form",
    "\tTABBED\t=\ttabs around",
    "DUPLICATE=first",
    "DUPLICATE=second",
    "123=numeric key",
    "dotted.key-name=dots and dashes",
    "MULTILINE=\"first line",
    "second line 'x'",
    "last line\"",
    "NESTED=${SINGLE}/${MULTILINE}",
    "SELF_DEFAULT=${SELF_DEFAULT:-default}",
    "SHARED=file-value",
    "toString=a key JavaScript objects inherit, $FROM_ENV",
    "valueOf=another",
]


def vercel_line(key: str, value: str) -> str:
    """The line ``vercel env pull`` writes (packages/cli env pull: escapeValue)."""
    return f'{key}="' + value.replace("\n", "\\n").replace("\r", "\\r") + '"'


def vercel_file(values: Mapping[str, str]) -> str:
    return ("# Created by Vercel CLI\n"
            + "\n".join(vercel_line(k, values[k]) for k in sorted(values)) + "\n")


@pytest.fixture(scope="module")
def next_env(tmp_path_factory: pytest.TempPathFactory, node_packages: Path) -> Path:
    folder = tmp_path_factory.mktemp("next-env")
    (folder / "package.json").write_text('{"name": "next-env-probe", "private": true}')
    link_into(folder, node_packages)  # the run's one install (tests/node_packages.py)
    (folder / "probe.cjs").write_text(PROBE)
    (folder / "probe-many.cjs").write_text(PROBE_MANY)
    return folder


def next_reads(next_env: Path, app: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """process.env of a Next.js app in folder ``app`` started with exactly ``environ``."""
    node = shutil.which("node")
    assert node is not None
    proc = subprocess.run([node, str(next_env / "probe.cjs"), str(app)], cwd=next_env,
                          env=dict(environ), capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["errors"] == []
    env: dict[str, str] = out["env"]
    return env


def compare(next_env: Path, folder: Path, text: str | bytes) -> dict[str, str]:
    folder.mkdir()
    path = folder / ".env.production.local"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    expected = next_reads(next_env, folder, ENVIRON)
    values = read_env_file(path, ENVIRON)
    ours = {**ENVIRON, "__NEXT_PROCESSED_ENV": "true", **values}
    assert ours == expected
    return values


def test_a_file_vercel_env_pull_writes(next_env: Path, tmp_path: Path) -> None:
    values = compare(next_env, tmp_path / "vercel", vercel_file(VERCEL_VALUES))
    assert values["PRIVATE_KEY"] == PEM
    assert values["DATABASE_URL"] == VERCEL_VALUES["DATABASE_URL"]
    # Expansion happens to values the dashboard never meant to expand, as in the app.
    assert values["ADMIN_PASSWORD"] != VERCEL_VALUES["ADMIN_PASSWORD"]
    # The environment wins over the file, with its value expanded by @next/env.
    assert values["SHARED"] == "env-env-value-$kept"
    assert values["SHARED_PLAIN"] == "env-plain"


def test_what_dotenv_accepts_besides(next_env: Path, tmp_path: Path) -> None:
    values = compare(next_env, tmp_path / "hand", "\n".join(HAND_WRITTEN) + "\n")
    assert values["MULTILINE"] == "first line\nsecond line 'x'\nlast line"
    assert values["DUPLICATE"] == "second"
    assert values["UNQUOTED_HASH"] == "value"


def test_crlf_line_endings_and_a_byte_order_mark(next_env: Path, tmp_path: Path) -> None:
    text = vercel_file(VERCEL_VALUES) + "\n".join(HAND_WRITTEN) + "\n"
    crlf = compare(next_env, tmp_path / "crlf", text.replace("\n", "\r\n"))
    assert crlf["MULTILINE"] == "first line\nsecond line 'x'\nlast line"
    compare(next_env, tmp_path / "bom", "\ufeff" + text)
    compare(next_env, tmp_path / "no-final-newline", text.rstrip("\n"))


def test_settings_hold_what_the_app_holds(next_env: Path, tmp_path: Path) -> None:
    """Through `Settings.load`, as the gate and the commands read --env-file."""
    folder = tmp_path / "settings"
    folder.mkdir()
    values = dict(VERCEL_VALUES, OPS_BASE_URL="https://app.example/$FROM_ENV",
                  OPSGATE_TARGET_NAME="prod-${SHARED_PLAIN}")
    (folder / ".env.production.local").write_text(vercel_file(values), encoding="utf-8")
    app = next_reads(next_env, folder, ENVIRON)
    s = Settings.load(environ=ENVIRON, env_file=folder / ".env.production.local")
    assert s.admin_password is not None and s.admin_password.reveal() == app["ADMIN_PASSWORD"]
    assert s.database_url is not None and s.database_url.reveal() == app["DATABASE_URL"]
    assert s.ops_base_url == app["OPS_BASE_URL"] == "https://app.example/env-value"
    assert s.target_name == app["OPSGATE_TARGET_NAME"] == "prod-env-plain"
    assert s.admin_storage_backend == app["ADMIN_STORAGE_BACKEND"] == "neon"


#: Pieces of lines that make parsers and expanders disagree.
KEYS = ["A", "B", "C", "FROM_ENV", "EMPTY_ENV", "SHARED", "7", "x.y-z"]
PIECES = ["$A", "${B}", "${C:-d}", "$FROM_ENV", "${EMPTY_ENV:-e}", "\\$A", "$", "$$", "$&",
          "$'", "$1", "}", "{", "#", " # c", '"', "'", "`", "\\n", "\\r", "\\", '\\"', " ",
          "\t", "=", ":", "x", "ü", "𝄞", "\n", "export "]
QUOTES = ["", "", '"', "'", "`"]
SEPARATORS = ["=", " = ", "=\t", ": ", ":\t"]


def random_file(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(1, 6)):
        roll = rng.random()
        if roll < 0.1:
            lines.append(rng.choice(["", "# comment", "  # indented", "\t"]))
            continue
        value = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 5)))
        quote = rng.choice(QUOTES)
        lines.append(("export " if rng.random() < 0.15 else "") + rng.choice(KEYS)
                     + rng.choice(SEPARATORS) + quote + value + quote
                     + (" # note" if rng.random() < 0.15 else ""))
    end = rng.choice(["\n", "\r\n"])
    return end.join(lines) + rng.choice([end, ""])


def test_random_files_read_as_next_reads_them_or_refused(next_env: Path,
                                                         tmp_path: Path) -> None:
    """Every file opsgate accepts has @next/env's values, and loads in Node without an
    error. Seeded: the same files each run. Only accepted files go to Node: some refused
    ones (a value that doubles itself) keep Node busy for minutes before it gives up."""
    rng = random.Random(20261205)
    folders, ours = [], []
    for i in range(400):
        folder = tmp_path / f"app{i}"
        folder.mkdir()
        path = folder / ".env.production.local"
        path.write_text(random_file(rng), encoding="utf-8", newline="")
        try:
            ours.append(read_env_file(path, ENVIRON))
        except ConfigError:
            continue
        folders.append(folder)
    assert len(folders) >= 100  # most files are readable: the comparison is not vacuous
    node = shutil.which("node")
    assert node is not None
    proc = subprocess.run([node, str(next_env / "probe-many.cjs"), *map(str, folders)],
                          cwd=next_env, env=ENVIRON, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for folder, values, app in zip(folders, ours, json.loads(proc.stdout), strict=True):
        text = (folder / ".env.production.local").read_text()
        assert app["errors"] == [], text
        assert {**ENVIRON, "__NEXT_PROCESSED_ENV": "true", **values} == app["env"], text
