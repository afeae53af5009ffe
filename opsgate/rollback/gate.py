""""The gate's checks on Neon must be green" before the app goes back to it: the
packaged checks, run as ``opsgate gate`` runs them, in a child process (a gate run is
a pytest session of its own), recorded in the same reports folder and history as every
gate run; the verdict is read from the run's ``summary.json``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from opsgate.reports import summary_reader

#: The checks that speak for Neon's state before a return to it.
MARKERS = "preflight or parity or ledger or knowledge_drift or blob_fallback"

_ENTRY = "import sys; from opsgate.cli import main; sys.exit(main())"


def run_gate(reports: Path, env_file: Path | None, timeout_s: float = 900.0,
             environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """Whether the gate passed, and one line saying so (its run folder, or why not).
    ``environ``: the child's environment, when not this process's own (a rehearsal's
    gate must not see the caller's target variables, which would win over its file)."""
    runs = reports / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    args = [sys.executable, "-c", _ENTRY, "gate", "-m", MARKERS, "-q",
            "--reports-dir", str(reports)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s,
                              check=False, env=None if environ is None else dict(environ))
    except subprocess.TimeoutExpired:
        return False, f"the gate did not finish in {timeout_s:g} s"
    new = sorted(set(runs.iterdir()) - before) if runs.is_dir() else []
    summary = new[-1] / "summary.json" if new else None
    if summary is None or not summary.is_file():
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        return False, f"the gate left no summary (exit {done.returncode}): {tail[0][:200]}"
    doc = summary_reader.load(summary)
    if doc is None:
        return False, f"the gate's summary is not a readable JSON object: {summary}"
    failed = [c["marker"] for c in summary_reader.checks(doc) if c.get("status") not in
              ("passed", "partial")]
    where = summary.parent.relative_to(reports).as_posix()
    if doc.get("verdict") == "passed" and done.returncode == 0:
        return True, f"the gate passed ({MARKERS}); run {where}"
    return False, (f"the gate did not pass (verdict {doc.get('verdict')}, exit "
                   f"{done.returncode}; not passed: {', '.join(failed) or 'none'}); run {where}")
