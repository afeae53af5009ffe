"""The drill's scratch copy when its session was lost and the server cannot be reached
anew either (a Neon compute still down): one attempt, then one line saying the copy
was left and who removes it."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace
from typing import Any

from opsgate.sensitive import SecretUrl
from opsgate.verify import drill


def _refused_port() -> int:
    """A loopback port nothing listens on: a connection there is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_lost_session_and_an_unreachable_server_leave_the_copy_in_one_line() -> None:
    lost: Any = SimpleNamespace(closed=True, broken=True)
    url = SecretUrl(f"postgresql://owner:s3cret-pw@127.0.0.1:{_refused_port()}/app")
    name = drill.SCRATCH_PREFIX + "20260101T000000Z_1_main_abcdef"
    started = time.monotonic()
    line = drill._drop_scratch(lost, url, name, lambda s: s.replace("s3cret-pw", "***"))
    assert time.monotonic() - started < 5
    assert line is not None and "\n" not in line and "s3cret-pw" not in line
    assert line.startswith(f"the scratch database {name} could not be dropped (the "
                           "drill's session was lost"), line
    assert "cannot connect to" in line and "is left on the server" in line, line
    assert line.endswith("the next drill also removes it"), line
