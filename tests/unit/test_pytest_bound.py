"""opsgate is a pytest plugin: the pytest it runs under is one its requirement allows,
and that requirement has an upper bound (a major release may change the hooks and
options the plugin uses)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _pytest_requirement() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "pytest"]
    assert len(found) == 1, project["dependencies"]
    return found[0]


def test_the_pytest_requirement_has_an_upper_bound() -> None:
    bounds = {spec.operator for spec in _pytest_requirement().specifier}
    assert bounds & {"<", "<=", "~=", "=="}, f"pytest{_pytest_requirement().specifier}"


def test_the_installed_pytest_is_within_the_requirement() -> None:
    requirement = _pytest_requirement()
    assert requirement.specifier.contains(pytest.__version__, prereleases=True), (
        f"pytest {pytest.__version__} is installed; pyproject.toml asks for {requirement}")
