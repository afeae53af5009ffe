"""The sandbox's env file reads back, as the app reads env files, to what it serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.config import read_env_file
from opsgate.errors import OpsgateError
from opsgate.sandbox import Sandbox


def _sandbox(tmp_path: Path, values: dict[str, str]) -> Sandbox:
    sandbox = Sandbox.__new__(Sandbox)  # only the writer is under test: no cluster
    sandbox.profile = "plain"
    sandbox.env_file = tmp_path / "sandbox.env"
    sandbox._env_values = lambda: values  # type: ignore[method-assign]
    return sandbox


def test_values_read_back_as_written(tmp_path: Path) -> None:
    values = {"DATABASE_URL": "postgresql://u:tok_-.~@127.0.0.1:5/app?sslmode=disable",
              "OPS_BASE_URL": "http://127.0.0.1:8080"}
    sandbox = _sandbox(tmp_path, values)
    sandbox._write_env_file()
    assert read_env_file(sandbox.env_file) == values
    assert sandbox.env_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("value", ["pa$word", "line\\nbreak"])
def test_a_value_that_would_read_back_changed_is_refused(tmp_path: Path, value: str) -> None:
    sandbox = _sandbox(tmp_path, {"ADMIN_PASSWORD": value, "OPS_BASE_URL": "http://x"})
    with pytest.raises(OpsgateError, match=r"would not read back as written: ADMIN_PASSWORD$"):
        sandbox._write_env_file()
    assert not sandbox.env_file.exists()
