"""The one runner of PostgreSQL tools (`opsgate.clients.pgrun`): passwords only in the
environment, failures in one redacted line of the caller's error type."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.clients import pgrun
from opsgate.errors import DrillError
from opsgate.refresh.errors import RefreshError
from opsgate.sensitive import SecretUrl

URL = SecretUrl("postgresql://app:pw-canary-123@db.example:5432/app")


def test_the_password_goes_to_pgpassword_and_an_inherited_pgoptions_does_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOPTIONS", "-c search_path=evil")
    env = pgrun.tool_env(URL)
    assert env["PGPASSWORD"] == "pw-canary-123" and "PGOPTIONS" not in env
    assert "pw-canary-123" not in URL.without_password
    ro = pgrun.tool_env(URL, app_name="opsgate-refresh", read_only=True)
    assert ro["PGOPTIONS"] == "-c default_transaction_read_only=on"
    assert ro["PGAPPNAME"] == "opsgate-refresh"


@pytest.mark.parametrize("error", [DrillError, RefreshError])
def test_a_failing_tool_raises_the_callers_error_in_one_redacted_line(
        tmp_path: Path, error: type[Exception]) -> None:
    tool = tmp_path / "pg_fake"
    tool.write_text("#!/bin/sh\necho 'pg_restore: error: could not connect as "
                    "pw-canary-123' >&2\necho 'DETAIL: more' >&2\nexit 3\n")
    tool.chmod(0o755)
    with pytest.raises(error) as info:
        pgrun.run_tool([str(tool)], "pg_restore", pgrun.tool_env(URL),
                       lambda text: text.replace("pw-canary-123", "***"), error, hint=" (hint)")
    assert str(info.value) == ("pg_restore failed (exit 3): pg_restore: error: could not "
                               "connect as *** (hint)")


def test_a_stop_during_a_streamed_restore_ends_both_tools_at_once(tmp_path: Path) -> None:
    """A stop (KeyboardInterrupt, as SIGINT and the gate's SIGTERM raise) while the
    script streams into psql must not wait for psql's statement to end: the refresh
    streams from its main thread, within CI's 7.5 s grace."""
    import signal
    import time

    from opsgate.clients.pgtools import PgBinaries

    (tmp_path / "pg_restore").write_text("#!/bin/sh\nexec yes 'SELECT 1;'\n")
    (tmp_path / "psql").write_text("#!/bin/sh\nexec sleep 30\n")  # a long statement
    for tool in ("pg_restore", "psql"):
        (tmp_path / tool).chmod(0o755)
    tools = PgBinaries(17, 0, tmp_path, "test")

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    t = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            pgrun.restore_archive(tools, tmp_path / "archive", URL, 16, "pg_restore",
                                  str, RefreshError)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - t < 5
