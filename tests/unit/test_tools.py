"""The rule for programs the self-tests need (`tests.tools`): missing, a test fails
under CI and skips on a developer's machine, in one line naming the program."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tools import CHROMIUM, NODE, PGBOUNCER, TOOLS, Tool, require

MISSING = Tool("Frobnicator (frob)", lambda: None, "apt-get install frob")
PRESENT = Tool("Shell (sh)", lambda: "/bin/sh", "apt-get install dash")


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_a_missing_program_fails_under_ci_naming_it(ci: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception) as failed:
        require(MISSING)
    assert str(failed.value) == ("Frobnicator (frob) is missing, and CI must run this test: "
                                 "install it in CI (apt-get install frob)")


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_a_missing_program_skips_elsewhere_saying_why(ci: str | None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=r"^Frobnicator \(frob\) is not installed "
                       r"\(apt-get install frob\); CI installs it and runs this test$"):
        require(MISSING)


def test_a_present_program_is_found_whatever_ci_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require(PRESENT) == "/bin/sh"


@pytest.mark.parametrize(("ci", "outcome"), [("true", "errors"), ("false", "skipped")])
@pytest.mark.parametrize(("mark", "tool"), [('needs("node")', NODE),
                                            ('needs("chromium")', CHROMIUM),
                                            ("pgbouncer", PGBOUNCER)])
def test_the_markers_apply_the_rule_before_fixtures(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str,
        outcome: str, mark: str, tool: Tool, tmp_path: Path) -> None:
    """Through the self-tests' own hook, with the programs missing: an empty PATH, and
    an OPSGATE_PGBOUNCER that is no program."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("OPSGATE_PGBOUNCER", str(empty / "pgbouncer"))
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest("from tests.conftest import pytest_configure, pytest_runtest_setup\n")
    pytester.makepyfile(f"""
        import pytest

        @pytest.fixture
        def expensive():
            raise AssertionError("built before the check of the programs")

        @pytest.mark.{mark}
        def test_it(expensive):
            pass
        """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rfEs")
    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines([f"*{tool.name} is*"])
    result.stdout.no_fnmatch_line("*built before*")


def test_every_tool_has_a_name_and_an_install_hint() -> None:
    assert set(TOOLS) == {"node", "chromium", "pgbouncer"}
    for tool in TOOLS.values():
        assert tool.name and tool.install
