"""The change_control check through the gate, on small real git repositories: red for a
range that adds a migration without its index, changelog or checkpoint entry (each
missing one named), green when all three come with it, red for an empty range, one line
for a bad range; and a run of change_control alone needs no database."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from opsgate.errors import ChangeRangeError
from opsgate.verify.change_control import ChangePaths, review
from tests.gate_helpers import GateRun, clean_env, run_gate_here

#: Gate runs go through pytester in this process (verdicts, not processes).
pytestmark = pytest.mark.usefixtures("gate_in_process")

NEW = "20260301_1006_none_to_neon_audit_table"
CHECK = "test_change_control::test_each_migration_in_the_range_has_index_changelog_and_checkpoint_entries"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=opsgate-test", "-c", "user.email=test@example.invalid",
         "-c", "commit.gpgsign=false", *args],
        cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, message: str, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(text)
        git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "app"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    commit(r, "start", {
        "migrations/20260210_1001_none_to_neon_admin_schema.py": "# first\n",
        "docs/migrations.md": "# Migrations\n\n- 20260210_1001_none_to_neon_admin_schema\n",
        "CHANGELOG.md": "# Changelog\n\n- 20260210_1001_none_to_neon_admin_schema\n",
        "docs/checkpoints.md": "# Checkpoints\n\n- 20260210_1001_none_to_neon_admin_schema\n",
    })
    return r


def gate(tmp_path: Path, repo: Path, range_text: str) -> GateRun:
    return run_gate_here(tmp_path, "-m", "change_control", env=clean_env(
        OPSGATE_CHANGE_REPO=str(repo), OPSGATE_CHANGE_RANGE=range_text))


def test_migration_without_its_three_entries_is_red_naming_each(repo: Path, tmp_path: Path
                                                                ) -> None:
    base = git(repo, "rev-parse", "HEAD")
    commit(repo, "add a migration, nothing else", {f"migrations/{NEW}.py": "# new\n"})
    run = gate(tmp_path, repo, f"{base}..HEAD")
    assert run.code == 1, run.stdout[-2000:]
    message = run.failed()[CHECK]
    assert f"migration {NEW} (added in migrations/{NEW}.py) lacks" in message
    for needle in ("index (docs/migrations.md)", "changelog (CHANGELOG.md)",
                   "checkpoint (docs/checkpoints.md)"):
        assert needle in message, message
    assert "Traceback" not in run.stdout


def test_one_missing_entry_is_named_alone(repo: Path, tmp_path: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    commit(repo, "migration with index and changelog", {
        f"migrations/{NEW}.py": "# new\n", "docs/migrations.md": f"- {NEW}\n",
        "CHANGELOG.md": f"- {NEW}: audit table\n"})
    # The checkpoint log names an older migration only: an old mention is no entry.
    run = gate(tmp_path, repo, f"{base}..HEAD")
    message = run.failed()[CHECK]
    assert "lacks checkpoint (docs/checkpoints.md) in the same range" in message, message
    assert "index" not in message.split("lacks", 1)[1]


def test_migration_with_all_three_entries_is_green(repo: Path, tmp_path: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    commit(repo, "migration", {f"migrations/{NEW}.py": "# new\n"})
    commit(repo, "its docs, later in the same range", {
        "docs/migrations.md": f"| `{NEW}` | none → neon | audit table |\n",
        "CHANGELOG.md": f"- Migration `{NEW}`.\n",
        "docs/checkpoints.md": f"- 2026-03-01: {NEW} applied to staging\n"})
    run = gate(tmp_path, repo, f"{base}..HEAD")
    assert run.code == 0, run.stdout[-3000:]
    assert run.outcomes[CHECK][0] == "passed"
    (run_dir,) = (tmp_path / "reports" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["notes"] == []  # valid against its schema
    status = {c["marker"]: c["status"] for c in summary["checks"]}
    assert status["change_control"] == "passed" and status["ledger"] == "not run"


def test_edited_migration_needs_entries_too(repo: Path, tmp_path: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    commit(repo, "quiet edit", {"migrations/20260210_1001_none_to_neon_admin_schema.py": "#\n"})
    message = gate(tmp_path, repo, f"{base}..HEAD").failed()[CHECK]
    assert "20260210_1001_none_to_neon_admin_schema (modified" in message, message


def test_range_without_migrations_is_green_and_says_so(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    commit(repo, "docs only", {"README.md": "hello\n", "migrations/README.md": "notes\n"})
    found = review(f"{base}..HEAD", ChangePaths("migrations/", "docs/migrations.md",
                                                "CHANGELOG.md", "docs/checkpoints.md"),
                   cwd=repo / "docs")  # the default repository: the current directory's
    assert found.problems() == []
    ev = found.evidence().as_json()
    assert ev["migrations_changed"] == 0 and ev["commits_inspected"] == 1
    assert ev["note"] == "no migration script added or changed in 1 commit(s)"
    assert ev["commits"][0].endswith("docs only")


def test_the_apps_script_folder_and_languages(repo: Path, tmp_path: Path) -> None:
    """The runbook's app keeps npm scripts in scripts/migrations/: configurable."""
    base = git(repo, "rev-parse", "HEAD")
    name = "20260302_1007_blob_to_neon_media"
    commit(repo, "app migration", {f"scripts/migrations/{name}.mjs": "// new\n",
                                   "scripts/migrations/_helpers.mjs": "// helper\n",
                                   "CHANGELOG.md": f"- {name}\n"})
    found = review(f"{base}..HEAD", ChangePaths("scripts/migrations", "docs/migrations.md",
                                                "CHANGELOG.md", "docs/checkpoints.md"), str(repo))
    assert [(m.name, m.mentioned_in) for m in found.migrations] == [(name, ["changelog"])]
    assert found.problems() == [
        f"migration {name} (added in scripts/migrations/{name}.mjs) lacks index "
        "(docs/migrations.md), checkpoint (docs/checkpoints.md) in the same range"]


def test_empty_range_is_red(repo: Path, tmp_path: Path) -> None:
    run = gate(tmp_path, repo, "HEAD..HEAD")
    assert run.code == 1
    assert "holds no commit" in run.failed()[CHECK]


@pytest.mark.parametrize(("range_text", "needle"), [
    ("main..nope", "OPSGATE_CHANGE_RANGE='main..nope': unknown revision 'nope'"),
    ("main", "OPSGATE_CHANGE_RANGE='main' is not a range"),
    ("--output=x..HEAD", "is not a revision"),
])
def test_bad_range_fails_in_one_line(repo: Path, tmp_path: Path, range_text: str,
                                     needle: str) -> None:
    run = gate(tmp_path, repo, range_text)
    assert run.code == 1
    message = run.failed()[CHECK]
    assert needle in message, message
    assert "Traceback" not in run.stdout and not (repo / "x").exists()


def test_missing_range_names_the_variable(repo: Path, tmp_path: Path) -> None:
    run = run_gate_here(tmp_path, "-m", "change_control",
                   env=clean_env(OPSGATE_CHANGE_REPO=str(repo)))
    assert "missing OPSGATE_CHANGE_RANGE" in run.failed()[CHECK]


def test_the_flag_alone_needs_no_target(repo: Path, tmp_path: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    commit(repo, "docs only", {"README.md": "hello\n"})
    run = run_gate_here(tmp_path, env=clean_env(
        RUN_OPS_PREFLIGHT="false", RUN_OPS_PARITY="false", RUN_OPS_LEDGER="false",
        RUN_OPS_CHANGE_CONTROL="true", OPSGATE_CHANGE_REPO=str(repo),
        OPSGATE_CHANGE_RANGE=f"{base}..HEAD"))
    assert run.code == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "marker expression: change_control  (from RUN_OPS_* flags)" in run.stdout
    # With the default checks still on, the refusal says how to run it alone.
    run = run_gate_here(tmp_path, env=clean_env(
        RUN_OPS_CHANGE_CONTROL="true", OPSGATE_CHANGE_REPO=str(repo),
        OPSGATE_CHANGE_RANGE=f"{base}..HEAD"))
    assert run.code == 4
    assert "change_control needs no target: run it alone with -m change_control" in \
        run.stdout + run.stderr


def test_unrelated_histories_fail_in_one_line(repo: Path, tmp_path: Path) -> None:
    git(repo, "checkout", "-q", "--orphan", "other")
    commit(repo, "unrelated", {"other.txt": "x\n"})
    message = gate(tmp_path, repo, "main..other").failed()[CHECK]
    assert "main and other share no history" in message, message


PATHS = ChangePaths("migrations/", "docs/migrations.md", "CHANGELOG.md", "docs/checkpoints.md")


def test_a_repository_that_is_not_one_is_named(tmp_path: Path) -> None:
    with pytest.raises(ChangeRangeError, match=r"OPSGATE_CHANGE_REPO=.* is not a folder"):
        review("a..b", PATHS, str(tmp_path / "nope"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(ChangeRangeError, match=r"OPSGATE_CHANGE_REPO=.* is not in a git"):
        review("a..b", PATHS, str(tmp_path / "plain"))
    with pytest.raises(ChangeRangeError, match="set OPSGATE_CHANGE_REPO"):
        review("a..b", PATHS, cwd=tmp_path / "plain")


def test_default_gate_still_demands_a_target(tmp_path: Path) -> None:
    run = run_gate_here(tmp_path, "-m", "change_control or ledger",
                   env=clean_env(OPSGATE_CHANGE_RANGE="HEAD..HEAD"))
    assert run.code == 4
    assert "no target configured" in run.stderr
