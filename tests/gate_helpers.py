"""Running the real gate in a subprocess and reading its JUnit verdicts."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from opsgate.config import FLAG_DEFAULTS, VARIABLES

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class GateRun:
    code: int
    stdout: str
    stderr: str
    outcomes: dict[str, tuple[str, str]]  # "module::test" -> (outcome, message)

    def failed(self) -> dict[str, str]:
        return {k: m for k, (o, m) in self.outcomes.items() if o in ("failed", "error")}

    def failed_modules(self) -> set[str]:
        return {k.split("::")[0] for k in self.failed()}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in VARIABLES and k not in FLAG_DEFAULTS and not k.startswith("PYTEST_")
           and k != "GITHUB_STEP_SUMMARY"}
    env.update(extra)
    return env


def run_gate(tmp: Path, *args: str, env: dict[str, str] | None = None,
             timeout: float = 300) -> GateRun:
    junit = tmp / f"junit-{len(list(tmp.glob('junit-*')))}.xml"
    reports = [] if any(a.startswith(("--reports-dir", "--no-reports")) for a in args) else [
        f"--reports-dir={tmp / 'reports'}"]
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}",
         "-o", "junit_family=xunit2", *reports, *args],
        capture_output=True, text=True, cwd=ROOT, env=env or clean_env(), timeout=timeout,
    )
    outcomes: dict[str, tuple[str, str]] = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            module = case.get("classname", "").split(".")[-1]
            key = f"{module}::{case.get('name')}"
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                    message = (el.get("message") or "") + "\n" + (el.text or "")
            outcomes[key] = (outcome, message)
    return GateRun(p.returncode, p.stdout, p.stderr, outcomes)
