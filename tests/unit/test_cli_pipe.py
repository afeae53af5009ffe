"""A reader that goes away (``opsgate ... | head``) ends the command quietly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.gate_helpers import ROOT, clean_env


@pytest.mark.parametrize("args", [["opsgate.cli", "migrate", "list"],
                                  ["opsgate.cli", "--help"],
                                  ["opsgate.migrate", "list", "--json"]])
def test_a_closed_pipe_is_no_traceback(args: list[str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, env=clean_env())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    proc.wait(60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
