"""A sandbox's ledger check compares its ledger with the scripts it applied, not with
whatever folder of scripts the current directory holds (the app's repository, say)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from opsgate import resources
from opsgate.config import Settings
from opsgate.sandbox import Sandbox


def test_the_sandbox_names_the_folder_it_applied(sandbox: Sandbox, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "migrations"
    shutil.copytree(resources.migrations_dir(), mine)
    monkeypatch.chdir(tmp_path)
    assert Settings.load(environ={}).migrations_dir == str(mine)
    # As `pytest --sandbox` reads the sandbox's file: its target variables win.
    s = Settings.load(environ={}, env_file=sandbox.env_file, file_wins=True)
    assert s.migrations_dir == str(resources.migrations_dir())
    assert s.origins["OPSGATE_MIGRATIONS_DIR"] == "env file"
    # An operator's explicit choice still wins over a file read with --env-file.
    s = Settings.load(environ={"OPSGATE_MIGRATIONS_DIR": str(mine)}, env_file=sandbox.env_file)
    assert s.migrations_dir == str(mine)
