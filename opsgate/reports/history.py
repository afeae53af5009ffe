"""``reports/history.jsonl``: one line per run, each carrying the SHA-256 of the line
before it, so an edit, a deletion or a reordering of history is detectable.

The first line's ``prev_sha256`` is 64 zeros. A line's hash is SHA-256 of its exact
bytes without the trailing newline. The *head* is the last line's hash: a chain cannot
tell that lines were dropped from its end, so each run prints its head (terminal, JUnit
property, GitHub step summary) and ``opsgate reports verify --expect-head`` compares.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def line_hash(line: str) -> str:
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


def read_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln != ""]


def append(path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Append ``entry`` chained to the last line; returns the entry as written."""
    return append_entry(path, entry)[0]


def append_entry(path: Path, entry: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Append ``entry`` chained to the last line; returns it as written and the new head
    (the SHA-256 of the line just written).

    Callers hold a file lock (filelock) so concurrent runs cannot fork the chain.
    """
    lines = read_lines(path)
    record = {**entry, "prev_sha256": line_hash(lines[-1]) if lines else GENESIS}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        if f.tell() > 0:
            with path.open("rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":  # a last line left without its newline
                    f.write(b"\n")
        f.write(text.encode("utf-8") + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return record, line_hash(text)


def head(path: Path) -> str | None:
    """The SHA-256 of the last line, or None for an empty or missing history."""
    lines = read_lines(path)
    return line_hash(lines[-1]) if lines else None


@dataclass
class ChainCheck:
    ok: bool
    lines: int
    broken_at: int | None = None  # 1-based line number
    reason: str = ""


def verify(path: Path) -> ChainCheck:
    lines = read_lines(path)
    expected = GENESIS
    for i, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return ChainCheck(False, len(lines), i, "not valid JSON")
        if not isinstance(record, dict) or record.get("prev_sha256") != expected:
            what = ("the line before it was edited, removed or moved"
                    if i > 1 else "the first line does not start the chain")
            return ChainCheck(False, len(lines), i,
                              f"prev_sha256 does not match: {what}")
        expected = line_hash(line)
    return ChainCheck(True, len(lines))


def read_entries(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(the run records of the history, how many of its lines are not run records):
    damaged or edited lines are left out here, counted, and explained by `verify`."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    except OSError:
        return [], 0
    out = []
    bad = 0
    for line in (ln for ln in text.split("\n") if ln):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("run_id"), str):
            out.append(record)
        else:
            bad += 1
    return out, bad


def entries(path: Path) -> list[dict[str, Any]]:
    """The readable run lines of the history, for listing and trends."""
    return read_entries(path)[0]
