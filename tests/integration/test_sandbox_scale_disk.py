"""A scaled sandbox keeps its data on disk, whatever its profile: a million entities
take gigabytes, and memory (/dev/shm) is only for the small throwaway clusters."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from opsgate.sandbox import Sandbox
from opsgate.sandbox.embedded import memory_folder


@pytest.mark.parametrize("profile", [
    "plain", pytest.param("neon", marks=pytest.mark.pgbouncer)])
def test_a_scaled_sandbox_lives_in_the_temporary_folder_not_in_memory(profile: str) -> None:
    memory = memory_folder()
    if memory is None:
        pytest.skip("no memory folder (/dev/shm with 2 GiB free) here: every cluster is "
                    "on disk, so there is nothing to tell apart")
    with Sandbox.start(scale=3, profile=profile) as sb:
        assert sb.pg is not None
        data = sb.pg.datadir.resolve()
        assert not data.is_relative_to(Path(memory).resolve()), f"{data} is in memory"
        assert data.is_relative_to(Path(tempfile.gettempdir()).resolve()), data
