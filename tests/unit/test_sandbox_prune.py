"""Pruning the cached sandbox templates while other processes save and prune too."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsgate.sandbox import _sandbox


def test_an_entry_removed_between_the_listing_and_its_look_is_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A template another process's prune removes after this one listed it: the prune
    goes on (a sandbox's start called it), keeping the newest three and any younger
    than an hour, as before."""
    now = time.time()
    for i in range(5):  # two hours old and older, newest first
        t = tmp_path / f"15.18-{i}"
        t.mkdir()
        (tmp_path / f"15.18-{i}.json").write_text("{}")
        os.utime(t, (now - 7200 - i, now - 7200 - i))
    ghost = tmp_path / "15.18-gone"  # listed, then removed by the other process
    listing = Path.iterdir

    def iterdir(self: Path) -> Iterator[Path]:
        yield from listing(self)
        if self == tmp_path:
            yield ghost

    monkeypatch.setattr(Path, "iterdir", iterdir)
    monkeypatch.setattr(Path, "is_dir", lambda self: self == ghost or os.path.isdir(self))
    _sandbox._prune_seeded(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [
        "15.18-0", "15.18-0.json", "15.18-1", "15.18-1.json", "15.18-2", "15.18-2.json"]
