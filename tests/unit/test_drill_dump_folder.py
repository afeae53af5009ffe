"""The drill's dump folder (the data's rows in plain text) is removed whatever happens;
a stopped drill hands the removal to a process of its own, so that a disk slow to free
blocks cannot hold the drill past CI's grace."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from opsgate.verify import drill
from tests.waits import until


def _dump(tmp_path: Path) -> Path:
    folder = tmp_path / f"{drill.DUMP_FOLDER_PREFIX}{os.getpid()}-x"
    (folder / "archive").mkdir(parents=True)
    for n in range(3):
        (folder / "archive" / f"{n}.dat").write_bytes(b"row\n" * 1000)
    return folder


def test_a_finished_drill_removes_its_dump_folder_itself(tmp_path: Path) -> None:
    folder = _dump(tmp_path)
    before = len(drill._REMOVING)
    drill._remove_dump_folder(folder, stopping=False)
    assert not folder.exists()
    assert len(drill._REMOVING) == before


def test_a_stopped_drill_hands_its_dump_folder_to_a_process_of_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The drill's own process does not remove it (its rmtree would raise here), a
    process in a session of its own does, soon after."""
    folder = _dump(tmp_path)

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("the stopped drill removed the folder itself")

    monkeypatch.setattr(shutil, "rmtree", not_here)
    drill._remove_dump_folder(folder, stopping=True)
    remover = drill._REMOVING[-1]
    assert os.getsid(remover.pid) == remover.pid != os.getsid(0)
    assert isinstance(remover.args, list) and str(folder) in remover.args
    monkeypatch.undo()
    until(lambda: not folder.exists(), "the dump folder removed by its own process")
    assert remover.wait(30) == 0
