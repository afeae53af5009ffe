"""Binary discovery asks each program once per process, and again when it changes."""

from __future__ import annotations

import os
from pathlib import Path

from opsgate.clients import pgtools


def _program(path: Path, version: str, calls: Path) -> None:
    path.write_text(f'#!/bin/sh\necho run >> "{calls}"\necho "postgres (PostgreSQL) {version}"\n')
    path.chmod(0o755)


def test_a_program_is_asked_once_until_it_changes(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    program = tmp_path / "postgres"
    _program(program, "15.4", calls)
    assert pgtools.tool_version(program) == (15, 4)
    assert pgtools.tool_version(program) == (15, 4)
    assert calls.read_text().count("run") == 1
    _program(program, "16.10", calls)  # replaced in place: another size
    os.utime(program, ns=(1, 1))  # and another modification time
    assert pgtools.tool_version(program) == (16, 10)
    assert calls.read_text().count("run") == 2


def test_a_missing_or_broken_program_has_no_version(tmp_path: Path) -> None:
    assert pgtools.tool_version(tmp_path / "absent") is None
    broken = tmp_path / "broken"
    broken.write_text("not a program\n")
    broken.chmod(0o755)
    assert pgtools.tool_version(broken) is None
    assert pgtools.built_with_tls(tmp_path) is None  # no pg_config there
