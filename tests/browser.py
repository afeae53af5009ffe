"""Headless Chromium for the report self-tests: the page's DOM and a screenshot."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.tools import CHROMIUM, require


def render(page: Path, shot: Path, profile: Path, width: int = 1280, height: int = 900) -> str:
    """Chromium's DOM of ``page`` (a file), and its top ``width`` x ``height`` pixels
    saved to ``shot``; ``profile`` is a throwaway user-data folder."""
    browser = require(CHROMIUM)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    # One browser start for both: headless Chromium prints the DOM and saves the
    # screenshot of the same load of the page (a start costs about a second).
    run = subprocess.run([browser, *flags, "--dump-dom", f"--screenshot={shot}",
                          f"--window-size={width},{height}", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000, run.stderr[-1000:]
    assert "<html" in run.stdout, run.stderr[-1000:]
    return run.stdout
