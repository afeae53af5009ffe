"""Running the real gate (in a subprocess or through pytester) and reading its JUnit
verdicts; running opsgate's command lines in the test's process."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from opsgate.config import FLAG_DEFAULTS, VARIABLES

#: Variables about this machine (its pgbouncer, its cache), not about a target: an inner
#: run started by a self-test keeps them, as it keeps PATH.
MACHINE_VARIABLES = frozenset({"OPSGATE_PGBOUNCER", "OPSGATE_CACHE_DIR"})
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def from_the_project(env: dict[str, str] | None) -> Iterator[None]:
    """This process as a child started from the project would be: exactly ``env`` as the
    environment (this process's own if None), the project as the working directory; both
    restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        if env is not None:
            for name in list(os.environ):
                if name not in env:
                    mp.delenv(name)
            for name, value in env.items():
                mp.setenv(name, value)
        mp.chdir(ROOT)
        yield


def main_here(main: Callable[[Sequence[str]], int], argv: Sequence[str],
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A command line's ``main(argv)`` run in this process as ``python -m`` would run it
    from the project: exactly ``env`` as the environment (this process's if None), the
    project as the working directory, stdout and stderr captured, the exit code from the
    return value or SystemExit (argparse). Saves an interpreter start and a second import
    of opsgate per call; tests whose point is the process (signals, concurrency, the
    command line itself) start one instead. Main thread only: the environment and the
    streams are this process's."""
    assert threading.current_thread() is threading.main_thread(), "main thread only"
    out, err = io.StringIO(), io.StringIO()
    with from_the_project(env), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage errors and --help
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return subprocess.CompletedProcess(["main", *argv], code, out.getvalue(), err.getvalue())


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
           if (k not in VARIABLES or k in MACHINE_VARIABLES) and k not in FLAG_DEFAULTS
           and not k.startswith("PYTEST_")
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
    return GateRun(p.returncode, p.stdout, p.stderr, _outcomes(junit))


def _outcomes(junit: Path) -> dict[str, tuple[str, str]]:
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
    return outcomes


def run_gate_inprocess(pytester: pytest.Pytester, tmp: Path, *args: str,
                       env: dict[str, str] | None = None) -> GateRun:
    """`run_gate` without a new interpreter: the real checks, configuration and plugin,
    run by pytester in this process (its sys.modules snapshot keeps runs apart). For
    tests whose point is a check's verdict, not the process around it; about a second
    of interpreter start and imports saved per run."""
    junit = tmp / f"junit-{len(list(tmp.glob('junit-*')))}.xml"
    reports = [] if any(a.startswith(("--reports-dir", "--no-reports")) for a in args) else [
        f"--reports-dir={tmp / 'reports'}"]
    with from_the_project(env or clean_env()):
        result = pytester.runpytest_inprocess(
            "-p", "no:cacheprovider", f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml"),
            f"--junitxml={junit}", "-o", "junit_family=xunit2", *reports, *args)
    return GateRun(int(result.ret), "\n".join(result.outlines), "\n".join(result.errlines),
                   _outcomes(junit))


def gate_project(pytester: pytest.Pytester, checks: str) -> pytest.Pytester:
    """A project of its own for a plugin test: the gate's ini and ``checks/test_all.py``
    holding ``checks`` (the source of a checks module)."""
    pytester.makeini("[pytest]\ntestpaths = checks\n"
                     "addopts = --strict-markers -p opsgate.pytest_plugin.plugin\n")
    pytester.mkdir("checks")
    (pytester.path / "checks" / "test_all.py").write_text(checks)
    return pytester


#: The pytester of the running test, pushed by the ``gate_in_process`` fixture
#: (tests/integration/conftest.py) for modules that run their gates in-process.
PYTESTERS: list[pytest.Pytester] = []


def run_gate_here(tmp: Path, *args: str, env: dict[str, str] | None = None) -> GateRun:
    """`run_gate_inprocess` with the running test's pytester (module opted in with
    ``pytestmark = pytest.mark.usefixtures("gate_in_process")``)."""
    assert PYTESTERS, "use the gate_in_process fixture"
    return run_gate_inprocess(PYTESTERS[-1], tmp, *args, env=env)


def _preload() -> None:
    """Import, in this process, what a gate run imports, before any pytester exists.
    pytester forgets the modules imported after it was set up; a library imported afresh
    by the next run would have new classes, while objects of this process still hold the
    old ones (httpx caches its map of httpcore's errors: an httpcore error would then
    escape it)."""
    import importlib
    import pkgutil

    import opsgate

    for name in ("httpx", "httpcore", "psycopg", "ijson", "jsonschema", "jsonschema_rs",
                 "allure", "allure_pytest.plugin", "xdist.plugin", "tqdm"):
        importlib.import_module(name)
    for info in pkgutil.walk_packages(opsgate.__path__, "opsgate."):
        if "._data" not in info.name and not info.name.endswith("__main__"):
            importlib.import_module(info.name)


_preload()
