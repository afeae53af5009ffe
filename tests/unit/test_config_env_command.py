"""``opsgate env``: every variable and flag, its value as a run sees it, where it came
from; never a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.cli import main
from opsgate.config import FLAG_DEFAULTS, VARIABLES

CANARIES = {"ADMIN_PASSWORD": "pw-canary-admin-1", "VERCEL_TOKEN": "tok-canary-vercel-2",
            "BLOB_READ_WRITE_TOKEN": "vercel_blob_rw_canary-3"}


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in (*VARIABLES, *FLAG_DEFAULTS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _listing(out: str) -> dict[str, tuple[str, str]]:
    lines = out.splitlines()
    assert lines[0].split() == ["variable", "value", "from"]
    found = {}
    for line in lines[1:]:
        name, rest = line.split(None, 1)
        value, origin = rest.split("  ", 1) if "  " in rest else (rest, "")
        found[name] = (value.strip(), origin.strip())
    return found


def test_every_variable_with_its_value_and_origin(
        clean: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env_file = tmp_path / "prod.env"
    env_file.write_text(
        "DATABASE_URL=postgresql://app:pw-canary-db-4@db.example/app\n"
        f"ADMIN_PASSWORD={CANARIES['ADMIN_PASSWORD']}\n"
        f"BLOB_READ_WRITE_TOKEN={CANARIES['BLOB_READ_WRITE_TOKEN']}\n"
        "OPSGATE_HTTP_TIMEOUT=7\nRUN_OPS_HEALTH=yes\n"
        # Not a secret variable, but holding one: still never printed.
        f"OPSGATE_TARGET_NAME=prod-{CANARIES['ADMIN_PASSWORD']}\n")
    clean.setenv("VERCEL_TOKEN", CANARIES["VERCEL_TOKEN"])
    clean.setenv("OPSGATE_HTTP_TIMEOUT", "9")
    assert main(["env", "--env-file", str(env_file)]) == 0
    captured = capsys.readouterr()
    for secret in (*CANARIES.values(), "pw-canary-db-4"):
        assert secret not in captured.out + captured.err
    rows = _listing(captured.out)
    assert list(rows) == [*VARIABLES, *FLAG_DEFAULTS]
    assert rows["DATABASE_URL"] == ("postgresql://app:***@db.example/app", "env file")
    assert rows["ADMIN_PASSWORD"] == ("***", "env file")
    assert rows["VERCEL_TOKEN"] == ("***", "environment")
    assert rows["OPSGATE_HTTP_TIMEOUT"] == ("9", "environment")  # the environment wins
    assert rows["ADMIN_BLOB_PREFIX"] == ("admin/", "default")
    assert rows["OPSGATE_CHANGE_RANGE"] == ("-", "default")
    assert rows["RUN_OPS_HEALTH"] == ("true", "env file")
    assert rows["RUN_OPS_PREFLIGHT"] == ("true", "default")
    assert rows["RUN_OPS_DEPLOYMENT"] == ("false", "default")
    assert rows["OPSGATE_MIGRATIONS_DIR"][1] == "default: the migrations shipped with opsgate"


@pytest.mark.parametrize(("text", "named"), [
    ("RUN_OPS_HEALTH=maybe\n", "RUN_OPS_HEALTH"),
    ("OPSGATE_HTTP_TIMEOUT=soon\n", "OPSGATE_HTTP_TIMEOUT"),
    ("ADMIN_PASSWORD=\"sekrit-xyz\n", "ADMIN_PASSWORD"),
])
def test_a_bad_value_is_one_line_naming_the_variable(
        clean: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        text: str, named: str) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text(text)
    assert main(["env", "--env-file", str(env_file)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("opsgate env: ") and captured.err.count("\n") == 1
    assert named in captured.err and "sekrit" not in captured.err


def test_a_missing_env_file(clean: pytest.MonkeyPatch, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env", "--env-file", str(tmp_path / "nope.env")]) == 2
    assert "no such file" in capsys.readouterr().err
