"""The gate's header names the target once, then says what it is: a sandbox built for
this run, or a real target and where its settings came from ("target sandbox sandbox"
said the kind twice)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from opsgate import __version__
from opsgate.config import Settings
from opsgate.pytest_plugin.plugin import STATE_KEY, GateState, pytest_report_header


class _Config:
    """What the header reads of pytest's config: the gate's state and --env-file."""

    def __init__(self, state: GateState, env_file: str | None) -> None:
        self.stash = pytest.Stash()
        self.stash[STATE_KEY] = state
        self._env_file = env_file

    def getoption(self, name: str, default: Any = None) -> Any:
        return self._env_file if name == "env_file" else default


def _header(environ: dict[str, str], kind: str = "environment", env_file: str | None = None,
            inspect_only: bool = False) -> list[str]:
    state = GateState(settings=Settings.load(environ=environ), gate_mode=True,
                      expression="preflight", expression_source="-m", target_kind=kind,
                      inspect_only=inspect_only)
    return pytest_report_header(cast(pytest.Config, _Config(state, env_file)))


SANDBOX_DB = "postgresql://opsgate:pw-canary@127.0.0.1:5432/app"


@pytest.mark.parametrize("name", ["sandbox", "sandbox-neon", "sandbox-scale-40"])
def test_the_sandbox_is_named_once_and_said_to_be_built_for_this_run(name: str) -> None:
    lines = _header({"DATABASE_URL": SANDBOX_DB, "OPSGATE_TARGET_NAME": name}, "sandbox")
    assert lines[0] == (f"opsgate {__version__}: target {name} "
                        "(postgresql://opsgate:***@127.0.0.1:5432/app), "
                        "a sandbox built for this run")
    assert "sandbox sandbox" not in "\n".join(lines)
    assert lines[-1] == "opsgate: marker expression: preflight  (from -m)"


def test_a_real_target_says_where_its_settings_came_from() -> None:
    prod = {"DATABASE_URL": "postgresql://app:s3cret-canary@db.example:5432/prod"}
    from_file = _header(prod, env_file=".env.production.local")
    assert from_file[0] == (f"opsgate {__version__}: target db.example "
                            "(postgresql://app:***@db.example:5432/prod), settings from "
                            ".env.production.local and the environment")
    alone = _header({**prod, "OPSGATE_TARGET_NAME": "production"})
    assert alone[0] == (f"opsgate {__version__}: target production "
                        "(postgresql://app:***@db.example:5432/prod), settings from the "
                        "environment")
    assert "s3cret-canary" not in "\n".join(from_file + alone)


def test_an_inspection_names_no_target() -> None:
    lines = _header({"DATABASE_URL": SANDBOX_DB}, "none (inspection only)", inspect_only=True)
    assert lines == [f"opsgate {__version__}: no target (inspection only)",
                     "opsgate: marker expression: preflight  (from -m)"]
