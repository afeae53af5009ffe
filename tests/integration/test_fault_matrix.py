"""The fault matrix: for each single fault the sandbox can inject (its switches, and the
data and settings faults the self-tests make), one gate run over every check, and the
exact set of checks that go red. Each fact is judged by one check (docs/checks.md,
"Which check owns which fact"): a fault turns another check red only when it breaks a
second fact of its own."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from opsgate.gate import CHECKS
from opsgate.sandbox import Sandbox
from opsgate.sandbox.reference_app import FAULTS
from tests.gate_helpers import ROOT, clean_env, run_gate_here

pytestmark = pytest.mark.usefixtures("gate_in_process", "quick_retries")

EVERY_CHECK = " or ".join(c.marker for c in CHECKS)
NEW_MIGRATION = "20270101_1007_none_to_neon_audit_table"
#: ADMIN_BLOB_PREFIX of the sandbox.
PREFIX = "admin/"

#: The sandbox's fault switches (`reference_app.FAULTS`) and the one check each turns red.
SWITCHES: dict[str, set[str]] = {
    "api-missing-node": {"parity"}, "api-extra-edge": {"parity"},
    "api-dangling-edge": {"parity"}, "api-domain-renamed": {"parity"},
    "api-build-as-note": {"parity"}, "overview-count-off-by-one": {"parity"},
    "api-500": {"parity"}, "api-html": {"parity"},
    # A deployment whose API is slow on one path is not unreachable: preflight's GET /
    # still answers (only an origin that could not be connected to is not tried again).
    "api-hang": {"parity"},
    "api-login-redirect": {"parity"}, "api-bad-node-deep": {"parity"},
    "site-404": {"preflight"},
    # Both blob checks read the store's listing: a store that does not answer is red in
    # each (an answer, or a time-out, is not "could not connect").
    "blob-500": {"blob_fallback", "blob_objects"}, "blob-hang": {"blob_fallback", "blob_objects"},
    "vercel-wrong-project": {"deployment"}, "vercel-backend-blob": {"deployment"},
    "vercel-backend-sensitive": {"deployment"}, "vercel-preview-backend-blob": {"deployment"},
    "vercel-no-database-url": {"deployment"}, "vercel-deploy-error": {"deployment"},
    "vercel-deploy-building": {"deployment"},
    # Vercel's rate limit is waited out (Retry-After) and the checks stay green; an API
    # that keeps answering 503 is red in the deployment check alone.
    "vercel-429": set(), "vercel-503": {"deployment"},
    # Faults of redeploys and alias moves: only `opsgate rollback` redeploys, so the
    # gate's checks stay green (tests/integration/test_rollback.py holds each to its
    # one-line refusal).
    "vercel-redeploy-error": set(), "vercel-redeploy-stuck": set(),
    "vercel-alias-stuck": set(), "vercel-redeploy-stale-env": set(),
}

#: Faults of the data, the settings and the repository, and the checks they turn red.
#: A kb row lost is two facts: a table below its floor (preflight) and a graph that no
#: longer matches the legacy payload (knowledge_drift).
OTHERS: dict[str, set[str]] = {
    "kb-edge-deleted": {"preflight", "knowledge_drift"},
    "kb-edges-emptied": {"preflight", "knowledge_drift"},
    "ledger-row-deleted": {"ledger"},
    "script-edited-after-apply": {"ledger"},
    "backend-env-blob": {"preflight"},
    "admin-state-edited-in-neon": {"blob_fallback"},
    "migration-without-entries": {"change_control"},
    # A file of the admin state gone is two facts: the copy is not usable
    # (blob_fallback) and the store does not hold what it should (blob_objects); an
    # object the admin state does not name is only the second.
    "blob-object-missing": {"blob_fallback", "blob_objects"},
    "blob-object-extra": {"blob_objects"},
}


def test_the_matrix_covers_every_switch() -> None:
    assert set(SWITCHES) == set(FAULTS)


#: Checks whose faults this matrix cannot make, and where they are proved red instead.
PROVED_ELSEWHERE = {
    "neon_drill": "tests/integration/test_drill.py (a restore that differs)",
    "health": "tests/integration/test_checks_on_sandbox.py (a table emptied since the last "
              "green run, which these runs, writing no reports, do not keep)",
}


def test_every_check_has_a_fault_that_turns_it_red() -> None:
    """A new row of the gate table needs its faults here (or a word on where they are):
    a check no fault turns red is a check nothing proves."""
    reddened = set().union(*SWITCHES.values(), *OTHERS.values())
    assert [c.marker for c in CHECKS
            if c.marker not in reddened and c.marker not in PROVED_ELSEWHERE] == []


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository for change_control: ``clean`` changes no migration, ``faulty`` adds
    one with no index, changelog or checkpoint entry."""
    path = tmp_path_factory.mktemp("repo")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=path, check=True, capture_output=True, text=True).stdout

    git("init", "-q", "-b", "main")
    (path / "README.md").write_text("app\n")
    git("add", "-A")
    git("commit", "-q", "-m", "base")
    (path / "README.md").write_text("app, edited\n")
    git("commit", "-q", "-am", "docs only")
    git("tag", "clean")
    (path / "migrations").mkdir()
    (path / "migrations" / f"{NEW_MIGRATION}.py").write_text("# new\n")
    git("add", "-A")
    git("commit", "-q", "-m", "a migration and nothing else")
    return path


def _sql(sandbox: Sandbox, do: str, undo: str) -> Callable[[], contextlib.AbstractContextManager[None]]:
    @contextlib.contextmanager
    def fault() -> Iterator[None]:
        assert sandbox.pg is not None
        with sandbox.pg.connect("app") as conn:
            conn.execute(do)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(undo)
                conn.commit()
    return fault


def _faults(sandbox: Sandbox, tmp_path: Path, env: dict[str, str]
            ) -> dict[str, Callable[[], contextlib.AbstractContextManager[None]]]:
    """Each of `OTHERS` as a context that makes the fault and undoes it."""

    @contextlib.contextmanager
    def setting(**extra: str) -> Iterator[None]:
        env.update(extra)
        yield

    def edited_script() -> contextlib.AbstractContextManager[None]:
        edited = tmp_path / "migrations"
        shutil.copytree(ROOT / "migrations", edited)
        script = edited / "20260211_1002_blob_to_neon_admin_state.py"
        script.write_text(script.read_text() + "\n# a quiet edit after apply\n")
        return setting(OPSGATE_MIGRATIONS_DIR=str(edited))

    @contextlib.contextmanager
    def blob_objects(*, drop: str = "", add: str = "") -> Iterator[None]:
        kept = sandbox.bucket.get(PREFIX + drop) if drop else None
        if drop:
            sandbox.bucket.delete(PREFIX + drop)
        if add:
            sandbox.bucket.put(PREFIX + add, b"{}")
        try:
            yield
        finally:
            if kept is not None:
                sandbox.bucket.put(kept.pathname, kept.data)
            if add:
                sandbox.bucket.delete(PREFIX + add)

    keep = "CREATE TABLE fault_keep AS SELECT * FROM {t} WHERE {w}; DELETE FROM {t} WHERE {w}"
    back = "INSERT INTO {t} SELECT * FROM fault_keep; DROP TABLE fault_keep"
    one_edge = "ctid = (SELECT min(ctid) FROM kb_edges)"
    return {
        "kb-edge-deleted": _sql(sandbox, keep.format(t="kb_edges", w=one_edge),
                                back.format(t="kb_edges")),
        "kb-edges-emptied": _sql(sandbox, keep.format(t="kb_edges", w="true"),
                                 back.format(t="kb_edges")),
        "ledger-row-deleted": _sql(
            sandbox, keep.format(t="admin_migrations", w="name LIKE '%kb_schema'"),
            back.format(t="admin_migrations")),
        "script-edited-after-apply": edited_script,
        "backend-env-blob": lambda: setting(ADMIN_STORAGE_BACKEND="blob"),
        "admin-state-edited-in-neon": _sql(
            sandbox, "UPDATE admin_content_state SET payload = payload || "
            "'{\"fault\": true}'::jsonb WHERE key = 'homepage'",
            "UPDATE admin_content_state SET payload = payload - 'fault' "
            "WHERE key = 'homepage'"),
        "migration-without-entries": lambda: setting(OPSGATE_CHANGE_RANGE="clean..main"),
        "blob-object-missing": lambda: blob_objects(drop="history.json"),
        "blob-object-extra": lambda: blob_objects(add="content-state.json.bak"),
    }


def red_checks(sandbox: Sandbox, tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """marker -> the first failure's message, of one gate run over every check."""
    run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m", EVERY_CHECK,
                        "--no-reports", f"--reports-dir={tmp_path / 'reports'}", env=env)
    assert run.outcomes, run.stdout[-3000:]
    modules = {f"test_{c.marker}": c.marker for c in CHECKS}
    red: dict[str, str] = {}
    for key, message in run.failed().items():
        red.setdefault(modules[key.split("::")[0]], message.strip())
    return red


@pytest.fixture
def base_env(repo: Path) -> dict[str, str]:
    return clean_env(OPSGATE_CHANGE_REPO=str(repo), OPSGATE_CHANGE_RANGE="main~2..clean")


def test_the_clean_sandbox_is_green_in_every_check(sandbox: Sandbox, tmp_path: Path,
                                                   base_env: dict[str, str]) -> None:
    sandbox.faults.clear()
    assert red_checks(sandbox, tmp_path, base_env) == {}


@pytest.mark.parametrize("fault", sorted(SWITCHES))
def test_a_switch_turns_only_its_checks_red(sandbox: Sandbox, tmp_path: Path,
                                            base_env: dict[str, str], fault: str) -> None:
    sandbox.faults.set(fault)
    if fault.endswith("-hang"):
        # Past the timeout, which stays long enough for every other answer on a busy
        # machine (it applies to every check of the run).
        sandbox.faults.hang_seconds = 3
        base_env["OPSGATE_HTTP_TIMEOUT"] = "1"
    try:
        red = red_checks(sandbox, tmp_path, base_env)
    finally:
        sandbox.faults.clear()
    assert set(red) == SWITCHES[fault], red


@pytest.mark.parametrize("fault", sorted(OTHERS))
def test_a_data_or_settings_fault_turns_only_its_checks_red(
        sandbox: Sandbox, tmp_path: Path, base_env: dict[str, str], fault: str) -> None:
    sandbox.faults.clear()
    with _faults(sandbox, tmp_path, base_env)[fault]():
        red = red_checks(sandbox, tmp_path, base_env)
    assert set(red) == OTHERS[fault], red
