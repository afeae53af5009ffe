"""The package as users get it: a built wheel, installed (not editable) into a fresh
virtualenv, run from an empty folder, with no checkout anywhere in sight."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from filelock import FileLock

from tests.gate_helpers import ROOT, clean_env


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh virtualenv with the wheel built from this checkout.

    Built once per run and shared: under xdist this module's tests may land on both
    workers, and each used to build its own wheel and virtualenv (about 20 s each). The
    first worker to need it builds it under a file lock in the run's own temporary
    folder (the parent of every worker's); the other finds it there, complete (the
    marker file is written last; a failed build leaves none, and the next one starts
    afresh). The tests only run the installed commands in folders of their own.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    ready = shared / "wheel-venv.ready"
    with FileLock(str(shared / "wheel-venv.lock")):
        if not ready.exists():
            ready.write_text(str(_build_and_install(Path(tempfile.mkdtemp(
                prefix="wheel-", dir=shared)))))
    return Path(ready.read_text())


def _build_and_install(tmp: Path) -> Path:
    # Built from a copy of the project's own files: a build/ folder left in the checkout
    # by an earlier build would otherwise slip stale modules into the wheel.
    source = tmp / "source"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    *_build_isolation(), "-w", str(dist), str(source)], check=True,
                   capture_output=True, timeout=600)
    (wheel,) = dist.glob("opsgate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("opsgate/py.typed", "opsgate/pytest_plugin/gate.ini",
                   "opsgate/clients/db.py", "opsgate/verify/canon.py", "opsgate/refresh/run.py",
                   "opsgate/rollback/switch.py",
                   "opsgate/_data/checks/test_parity.py",
                   "opsgate/_data/migrations/20260210_1001_none_to_neon_admin_schema.py",
                   "opsgate/_data/fixtures/constellation.json",
                   "opsgate/_data/fixtures/contracts/constellation-api.schema.json",
                   "opsgate/_data/fixtures/expectations/sandbox.toml"):
        assert needed in names, needed
    assert not any(n.startswith("tests/") for n in names)
    # Only what the tree holds now: no module of an older layout.
    assert "opsgate/db.py" not in names and "opsgate/plugin.py" not in names
    venv = tmp / "venv"
    # Without pip of its own (ensurepip took about 4 s of CPU): this run's pip installs
    # into it (`--python`), resolving the wheel's dependencies as a user's install does.
    # Without compiling every installed module up front (4 of the install's 8 s of CPU):
    # the tool compiles what it imports, once, into this run's bytecode cache.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=300)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--quiet", "--no-compile", str(wheel)], check=True,
                   capture_output=True, timeout=1200)
    return venv / "bin"


def _build_isolation() -> list[str]:
    """pip's options for building the wheel: with this environment's build backend when
    it is one pyproject.toml's [build-system] accepts (the dev extra installs it), instead
    of a build environment pip makes and fills for the one build (2.6 s against 0.9 s
    here); isolated otherwise, as a user's pip builds it."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    for requirement in map(Requirement, build["requires"]):
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            return []
        if not requirement.specifier.contains(installed, prereleases=True):
            return []
    return ["--no-build-isolation"]


def _env(installed: Path, **extra: str) -> dict[str, str]:
    """The installed tool's environment, with its temporary folder inside this run's.
    Run as root, the embedded server runs as a service user, and opsgate copies the
    wheel's PostgreSQL for it into the temporary folder, keyed by where the wheel is
    installed: a fresh virtualenv per run left a 34 MB copy in the system's temporary
    folder at every run."""
    tmp = installed.parent.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    return clean_env(TMPDIR=str(tmp), **extra)


def test_opsgate_gate_on_the_sandbox_from_an_empty_folder(installed: Path,
                                                         tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    run = subprocess.run([str(installed / "opsgate"), "gate", "--sandbox", "-q"], cwd=empty,
                         capture_output=True, text=True, env=_env(installed), timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
    assert "site-packages/opsgate/_data/checks" in run.stdout or (empty / "reports").is_dir()
    assert list((empty / "reports" / "runs").iterdir())
    assert not (empty / "checks").exists()
    assert os.listdir(empty) == ["reports"]  # pytest's cache is in it, not beside it
    assert "PytestAssertRewriteWarning" not in run.stdout + run.stderr
    # A node id as the gate's own output names it reaches the packaged check.
    one = subprocess.run([str(installed / "opsgate"), "gate", "--sandbox", "-q",
                          "test_preflight.py::test_storage_backend_is_neon"], cwd=empty,
                         capture_output=True, text=True, env=_env(installed), timeout=600)
    assert one.returncode == 0 and "1 passed" in one.stdout, one.stdout[-2000:]


#: An app's own conftest.py, with options of the same names as the gate's: installed
#: beside it, opsgate must neither clash with them nor read their values.
APP_CONFTEST = """\
import pytest


def pytest_addoption(parser):
    parser.addoption("--env-file", default=None)
    parser.addoption("--sandbox", default="none")
    parser.addoption("--reports-dir", default=None)
    parser.addoption("--no-reports", action="store_true")


@pytest.fixture
def app_options(request):
    return {name: request.config.getoption(name)
            for name in ("env_file", "sandbox", "reports_dir", "no_reports")}
"""

APP_TEST = """\
def test_sum():
    assert 1 + 1 == 2


def test_the_apps_own_options(app_options):
    assert app_options == {"env_file": "app.env", "sandbox": "local",
                           "reports_dir": "app-reports", "no_reports": True}
"""


def test_the_installed_plugin_stays_out_of_an_app_with_options_of_its_own(
        installed: Path, tmp_path: Path) -> None:
    """Installed beside an app's own tests, opsgate registers nothing in the app's pytest
    runs: the app's conftest.py defines --env-file, --sandbox, --reports-dir and
    --no-reports for itself, and its tests get its values. `opsgate gate` (which loads
    the plugin itself, on its xdist workers too) still runs from the app's folder, and
    leaves only its reports there."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "conftest.py").write_text(APP_CONFTEST)
    (app / "test_app.py").write_text(APP_TEST)
    (app / "app.env").write_text("APP_SETTING=1\n")
    summary = tmp_path / "step-summary.md"
    env = _env(installed, RUN_OPS_PARITY="garbage", GITHUB_STEP_SUMMARY=str(summary),
               DATABASE_URL="postgresql://u@127.0.0.1:9/x", PYTHONDONTWRITEBYTECODE="1")
    run = subprocess.run([str(installed / "python"), "-m", "pytest", "-q", "-p",
                          "no:cacheprovider", "--env-file", "app.env", "--sandbox", "local",
                          "--reports-dir", "app-reports", "--no-reports"], cwd=app,
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0 and "2 passed" in run.stdout, run.stdout[-3000:] + run.stderr
    assert "opsgate" not in run.stdout + run.stderr
    # hypothesis is the self-tests' alone: installed with opsgate, its pytest plugin
    # would load in the app's runs.
    bare = subprocess.run([str(installed / "python"), "-c", "import importlib.util, sys; "
                           "sys.exit(importlib.util.find_spec('hypothesis') is not None)"],
                          env=env, timeout=60)
    assert bare.returncode == 0, "the wheel installed hypothesis"
    assert not (app / "reports").exists() and not (app / "app-reports").exists()
    assert not summary.exists()

    before = set(os.listdir(app))
    gate = subprocess.run([str(installed / "opsgate"), "gate", "--sandbox", "-q", "-n", "2"],
                          cwd=app, capture_output=True, text=True, env=_env(installed),
                          timeout=600)
    assert gate.returncode == 0, gate.stdout[-3000:] + gate.stderr[-2000:]
    assert " passed" in gate.stdout and "failed" not in gate.stdout
    assert list((app / "reports" / "runs").iterdir())
    assert set(os.listdir(app)) == before | {"reports"}  # no .pytest_cache/, nothing else
    assert (app / "reports" / ".pytest_cache").is_dir()  # pytest's cache: with the reports


def test_opsgate_gate_with_space_form_options_against_sandbox_up(installed: Path,
                                                                 tmp_path: Path) -> None:
    elsewhere = tmp_path / "outside" / "target.env"
    elsewhere.parent.mkdir()
    up = subprocess.Popen([str(installed / "opsgate"), "sandbox", "up", "--env-file",
                           str(elsewhere)], cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=_env(installed))
    try:
        assert up.stdout is not None
        line = up.stdout.readline()
        assert "settings in" in line, line + (up.stderr.read() if up.stderr else "")
        empty = tmp_path / "empty"
        empty.mkdir()
        reports = tmp_path / "reports-elsewhere"
        run = subprocess.run([str(installed / "opsgate"), "gate", "--env-file", str(elsewhere),
                              "--reports-dir", str(reports), "-q"], cwd=empty,
                             capture_output=True, text=True, env=_env(installed), timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        assert list((reports / "runs").iterdir())
        assert os.listdir(empty) == [] and (reports / ".pytest_cache").is_dir()
        verify = subprocess.run([str(installed / "opsgate"), "reports", "verify",
                                 "--reports-dir", str(reports)], capture_output=True,
                                text=True, env=_env(installed), timeout=120)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
    assert up.returncode == 0 and not elsewhere.exists()
    assert os.listdir(tmp_path / "outside") == []


def test_opsgate_gate_remembers_failures_in_its_reports_folder(installed: Path,
                                                               tmp_path: Path) -> None:
    """`--lf` works with `opsgate gate` (docs/configuration.md): pytest's cache lives in
    the reports folder; with --no-reports in a temporary one, so nothing is written."""
    app = tmp_path / "app"
    app.mkdir()
    env = _env(installed, DATABASE_URL="postgresql://u@127.0.0.1:9/x")
    gate = [str(installed / "opsgate"), "gate"]
    first = subprocess.run(gate, cwd=app, capture_output=True, text=True, env=env,
                           timeout=300)
    assert first.returncode == 1 and "Connection refused" in first.stdout, first.stdout[-2000:]
    again = subprocess.run([*gate, "--lf"], cwd=app, capture_output=True, text=True,
                           env=env, timeout=300)
    assert again.returncode == 1 and "run-last-failure: rerun previous" in again.stdout, (
        again.stdout[-2000:])
    assert os.listdir(app) == ["reports"] and (app / "reports" / ".pytest_cache").is_dir()
    runs = len(list((app / "reports" / "runs").iterdir()))
    bare = subprocess.run([*gate, "--no-reports", "--lf"], cwd=app, capture_output=True,
                          text=True, env=env, timeout=300)
    assert bare.returncode == 1 and "no previously failed tests" in bare.stdout, (
        bare.stdout[-2000:])
    assert os.listdir(app) == ["reports"]
    assert len(list((app / "reports" / "runs").iterdir())) == runs
