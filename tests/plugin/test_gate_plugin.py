"""The gate's plugin behaviour, run through pytester in an isolated project."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.gate import CHECKS
from tests.gate_helpers import gate_project

CHECKS_MODULE = "\n".join(
    f"""
@pytest.mark.{c.marker}
def test_{c.marker}():
    pass
"""
    for c in CHECKS
)

FULL_ENV = {
    "DATABASE_URL": "postgresql://u:pw@127.0.0.1:9/db",
    "OPS_BASE_URL": "http://127.0.0.1:9",
    "ADMIN_PASSWORD": "pw-for-tests",
    "BLOB_READ_WRITE_TOKEN": "vercel_blob_rw_test",
}


@pytest.fixture
def gate(pytester: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> pytest.Pytester:
    gate_project(pytester, "import pytest\n" + CHECKS_MODULE)
    return pytester


def _ran(result: pytest.RunResult) -> set[str]:
    return {
        line.split("::")[1].split()[0].removeprefix("test_")
        for line in result.outlines
        if "::test_" in line and ("PASSED" in line or "FAILED" in line)
    }


def _set(mp: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        mp.setenv(k, v)


def only_preflight(gate: pytest.Pytester, mp: pytest.MonkeyPatch, body: str) -> None:
    """A checks folder with one preflight test whose body is ``body``; only its flag on."""
    _set(mp, FULL_ENV)
    (gate.path / "checks" / "test_all.py").write_text(
        f"import pytest\n@pytest.mark.preflight\ndef test_preflight():\n    {body}\n")
    mp.setenv("RUN_OPS_PARITY", "false")
    mp.setenv("RUN_OPS_LEDGER", "false")


def test_default_flags_select_preflight_parity_ledger(gate: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    _set(clean_env, FULL_ENV)
    result = gate.runpytest("-v")
    assert _ran(result) == {"preflight", "parity", "ledger"}
    result.stdout.fnmatch_lines(["*marker expression: preflight or parity or ledger*(from RUN_OPS_* flags)*"])
    assert result.ret == 0


@pytest.mark.parametrize("spec", CHECKS, ids=lambda c: c.flag)
def test_each_flag_adds_or_removes_its_marker(
    gate: pytest.Pytester, clean_env: pytest.MonkeyPatch, spec: object
) -> None:
    _set(clean_env, FULL_ENV)
    from opsgate.config import FLAG_DEFAULTS

    flag, marker = spec.flag, spec.marker  # type: ignore[attr-defined]
    clean_env.setenv("RUN_OPS_PREFLIGHT", "true")  # keep one check on, so the run is not empty
    clean_env.setenv(flag, "true")
    on = _ran(gate.runpytest("-v"))
    assert marker in on
    if flag != "RUN_OPS_PREFLIGHT":
        clean_env.setenv(flag, "no")
        off = _ran(gate.runpytest("-v"))
        assert marker not in off
        assert on - off == {marker}
    assert FLAG_DEFAULTS[flag] == (marker in {"preflight", "parity", "ledger"})


def test_explicit_m_wins_over_flags(gate: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    _set(clean_env, FULL_ENV)
    clean_env.setenv("RUN_OPS_HEALTH", "false")
    result = gate.runpytest("-v", "-m", "health")
    assert _ran(result) == {"health"}
    result.stdout.fnmatch_lines(["*marker expression: health*(from -m)*"])


@pytest.mark.parametrize("value", ["maybe", "2", "enabled"])
def test_bad_flag_value_is_a_usage_error(gate: pytest.Pytester, clean_env: pytest.MonkeyPatch, value: str) -> None:
    _set(clean_env, FULL_ENV)
    clean_env.setenv("RUN_OPS_NEON_DRILL", value)
    result = gate.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*RUN_OPS_NEON_DRILL='{value}' is not a flag value*"])


def test_missing_required_variable_fails_the_check_by_name(gate: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", FULL_ENV["DATABASE_URL"])
    result = gate.runpytest("-v")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "checks/test_all.py:*: missing OPS_BASE_URL, ADMIN_PASSWORD: required by the parity check*",
    ])


def test_blob_check_without_token_fails_naming_it(gate: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", FULL_ENV["DATABASE_URL"])
    result = gate.runpytest("-m", "blob_fallback")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*missing BLOB_READ_WRITE_TOKEN: required by the blob_fallback check*"])


def test_no_target_fails_at_start(gate: pytest.Pytester) -> None:
    result = gate.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no target configured*--sandbox*"])
    assert "passed" not in result.stdout.str()


def test_all_flags_off_is_refused(gate: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    _set(clean_env, FULL_ENV)
    for c in CHECKS:
        clean_env.setenv(c.flag, "0")
    result = gate.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*would check nothing*"])


def test_selection_that_runs_no_check_is_not_green(gate: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    _set(clean_env, FULL_ENV)
    result = gate.runpytest("-m", "health and not health")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*no check ran*"])


def test_flag_whose_check_did_not_run_fails_the_gate(gate: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    only_preflight(gate, clean_env, "pass")
    clean_env.setenv("RUN_OPS_NEON_DRILL", "true")
    result = gate.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*flags on but their check did not run: RUN_OPS_NEON_DRILL (neon_drill)*"])


def test_env_file_supplies_the_target_and_environment_wins(
    gate: pytest.Pytester, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    env.write_text('DATABASE_URL="postgresql://file:filepw@db.file.example/app"\n'
                   "RUN_OPS_PARITY=false\nRUN_OPS_HEALTH=true\n")
    clean_env.setenv("RUN_OPS_HEALTH", "false")
    result = gate.runpytest("-v", f"--env-file={env}")
    assert _ran(result) == {"preflight", "ledger"}
    result.stdout.fnmatch_lines(["*target db.file.example (postgresql://file:***@*"])


def test_header_masks_the_password(gate: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", "postgresql://app:s3cret-canary@db.example:5432/prod")
    result = gate.runpytest("-m", "preflight")
    result.stdout.fnmatch_lines(["*target db.example (postgresql://app:***@db.example:5432/prod), settings from the environment*"])
    assert "s3cret-canary" not in result.stdout.str() + result.stderr.str()


def test_self_test_runs_are_not_gated(pytester: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\ntestpaths = checks\naddopts = -p opsgate.pytest_plugin.plugin\n")
    pytester.mkdir("tests")
    (pytester.path / "tests" / "test_unit.py").write_text("def test_ok():\n    pass\n")
    result = pytester.runpytest("tests")
    result.assert_outcomes(passed=1)


LEAKY_CHECKS = '''
import logging, os, sys
import pytest

@pytest.mark.parity
def test_assert_on_secret():
    password = os.environ["ADMIN_PASSWORD"]
    token = os.environ["BLOB_READ_WRITE_TOKEN"]
    print("stdout:", password, token, os.environ["DATABASE_URL"])
    print("stderr:", password, file=sys.stderr)
    logging.getLogger("x").error("log: %s %s", password, token)
    assert password == "something-else", f"login failed with {password} and {token}"

@pytest.mark.preflight
def test_exception_with_url():
    url = os.environ["DATABASE_URL"]
    raise RuntimeError("cannot connect to " + url)

@pytest.mark.ledger
def test_settings_objects(request):
    from opsgate.pytest_plugin.plugin import get_state
    s = get_state(request.config).settings
    assert s.admin_password == s.blob_read_write_token, (s, s.database_url)
'''

CANARIES = {
    "ADMIN_PASSWORD": "canary-admin-7f3a91",
    "BLOB_READ_WRITE_TOKEN": "vercel_blob_rw_canary-token-0c44e2",
    "DATABASE_URL": "postgresql://app:canary-dbpw-55d1b0@127.0.0.1:9/prod",
    "OPS_BASE_URL": "http://127.0.0.1:9",
}


@pytest.mark.parametrize("extra", [[], ["-l", "-vv", "--tb=long"], ["-n", "2"]],
                         ids=["default", "showlocals", "xdist"])
def test_no_secret_in_output_of_a_failing_run(
    gate: pytest.Pytester, clean_env: pytest.MonkeyPatch, extra: list[str]
) -> None:
    (gate.path / "checks" / "test_all.py").write_text(LEAKY_CHECKS)
    _set(clean_env, CANARIES)
    junit = gate.path / "junit.xml"
    result = gate.runpytest_subprocess(*extra, f"--junitxml={junit}", "-rA")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    everything = result.stdout.str() + result.stderr.str() + junit.read_text()
    assert "login failed with ***" in everything  # the message is still useful
    for canary in ("canary-admin-7f3a91", "canary-token-0c44e2", "canary-dbpw-55d1b0"):
        assert canary not in everything, f"secret {canary[:10]}... leaked"


def test_unwritable_reports_dir_is_a_usage_error(gate: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    _set(clean_env, FULL_ENV)
    blocker = gate.path / "not-a-dir"
    blocker.write_text("a file where the reports folder should be")
    result = gate.runpytest(f"--reports-dir={blocker}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cannot create the run's reports*--no-reports*"])


def test_reports_are_written_for_a_failing_run_and_named(gate: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    only_preflight(gate, clean_env, "assert 1 == 2, 'boom'")
    result = gate.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["opsgate: reports in *reports/runs/*_127.0.0.1"])
    import json
    (run_dir,) = (gate.path / "reports" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verdict"] == "failed"
    (check,) = [c for c in summary["checks"] if c["marker"] == "preflight"]
    assert check["tests"][0]["message"].startswith("AssertionError: boom")


# -- selection the pytest way, inspection without a target, skips are not passes ----


def _reports(gate: pytest.Pytester) -> list[str]:
    root = gate.path / "reports"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("args", [
    ("checks/test_all.py::test_parity",),
    ("-k", "preflight"),
    ("checks/test_all.py", "--deselect", "checks/test_all.py::test_ledger"),
], ids=["node-id", "-k", "--deselect"])
def test_pytest_narrowing_narrows_the_gate(gate: pytest.Pytester, clean_env: pytest.MonkeyPatch,
                                           args: tuple[str, ...]) -> None:
    _set(clean_env, FULL_ENV)
    result = gate.runpytest("-v", *args)
    assert result.ret == 0, result.stdout.str()[-1500:]
    assert "flags on but their check did not run" not in result.stdout.str()


def test_last_failed_and_stepwise_after_a_pass(gate: pytest.Pytester,
                                               clean_env: pytest.MonkeyPatch) -> None:
    _set(clean_env, FULL_ENV)
    assert gate.runpytest("-p", "cacheprovider").ret == 0
    for option in ("--lf", "--sw"):
        result = gate.runpytest("-p", "cacheprovider", option, "-v")
        assert result.ret == 0, (option, result.stdout.str()[-1500:])
        assert _ran(result) == {"preflight", "parity", "ledger"}


@pytest.mark.parametrize("args", [("--co", "-q"), ("--markers",), ("--fixtures",),
                                  ("--help",), ("--version",)])
def test_inspection_needs_no_target_and_leaves_no_trace(gate: pytest.Pytester,
                                                        args: tuple[str, ...]) -> None:
    result = gate.runpytest(*args)
    assert result.ret == 0, result.stderr.str()[-1500:]
    assert "no target configured" not in result.stderr.str()
    assert _reports(gate) == []


def test_collect_only_with_a_target_shows_the_gate_and_writes_no_history(
    gate: pytest.Pytester, clean_env: pytest.MonkeyPatch
) -> None:
    _set(clean_env, FULL_ENV)
    result = gate.runpytest("--co", "-q")
    assert result.ret == 0
    listed = {ln.split("::")[-1] for ln in result.outlines if "::test_" in ln}
    assert listed == {"test_preflight", "test_parity", "test_ledger"}
    assert _reports(gate) == []


@pytest.mark.parametrize(("expr", "says"), [
    ("paritty", "names no registered marker: paritty"),
    ("parity or", "is not a marker expression"),
])
def test_a_bad_m_is_a_usage_error_that_writes_nothing(
    gate: pytest.Pytester, clean_env: pytest.MonkeyPatch, expr: str, says: str
) -> None:
    _set(clean_env, FULL_ENV)
    result = gate.runpytest("-m", expr)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert says in result.stderr.str()
    assert _reports(gate) == []


def test_a_run_whose_checks_all_skip_is_not_green(gate: pytest.Pytester,
                                                  clean_env: pytest.MonkeyPatch) -> None:
    _set(clean_env, FULL_ENV)
    (gate.path / "checks" / "test_all.py").write_text(
        "import pytest\n" + "\n".join(
            f"@pytest.mark.{m}\ndef test_{m}():\n    pytest.skip('nothing to see')\n"
            for m in ("preflight", "parity", "ledger")))
    result = gate.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*3 selected check(s) skipped, and a skipped check did not "
                                 "run*nothing to see*"])


def test_a_partial_check_says_so(gate: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    only_preflight(gate, clean_env, "pass")
    (gate.path / "checks" / "test_all.py").write_text(
        "import pytest\nfrom opsgate.verify.evidence_types import Partial\n"
        "@pytest.mark.preflight\ndef test_preflight(evidence):\n"
        "    evidence.set(Partial('the other half was not compared'))\n")
    result = gate.runpytest()
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*opsgate: PARTIAL: *test_preflight: the other half was not "
                                 "compared*"])


@pytest.mark.parametrize("option", ["--sandbox-profile", "--sandbox-scale"])
def test_a_space_form_value_a_conftest_plugin_cannot_parse_is_refused(
        pytester: pytest.Pytester, clean_env: pytest.MonkeyPatch, option: str) -> None:
    """Loaded by the app's conftest, the plugin's options are unknown when pytest first
    reads the command line: "--sandbox-profile neon" made "neon" the only test path, so
    pytest loaded the conftests of the app's test folders into the gate. Refused in one
    line naming the fix; the "=" form, and the plugin loaded by name, parse either way."""
    value = {"--sandbox-profile": "neon", "--sandbox-scale": "40"}[option]
    pytester.makeini("[pytest]\ntestpaths = checks\n")
    pytester.makeconftest('pytest_plugins = ["opsgate.pytest_plugin.plugin"]\n')
    pytester.mkdir("checks")
    (pytester.path / "checks" / "test_all.py").write_text(
        "import pytest\n@pytest.mark.preflight\ndef test_p():\n    pass\n")
    pytester.mkdir("tests")
    (pytester.path / "tests" / "conftest.py").write_text(
        "import pathlib\npathlib.Path('app-conftest-loaded').touch()\n")
    loaded = pytester.path / "app-conftest-loaded"
    refused = pytester.runpytest_inprocess(option, value, "--co", "-q")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    errors = [ln for ln in refused.errlines if ln.strip()]
    assert len(errors) == 1 and f"write {option}={value}" in errors[0], errors
    assert loaded.exists()  # what the refusal is about: it was loaded
    loaded.unlink()
    for args in ((f"{option}={value}", "--co", "-q"),
                 ("-p", "opsgate.pytest_plugin.plugin", option, value, "--co", "-q")):
        result = pytester.runpytest_inprocess(*args)
        assert result.ret == 0, result.errlines
        assert not loaded.exists(), args
    assert _reports(pytester) == []
