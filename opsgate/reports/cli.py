"""``opsgate reports verify|list|show``: read the run history as an auditor would."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from opsgate.reports import history, seal, summary_reader
from opsgate.reports.writer import HISTORY

#: Problems printed per run before "... and N more" (a deleted allure-results/ folder
#: would otherwise print one line per file).
MAX_PER_RUN = 10


def _reports_dir(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--reports-dir", default=default, metavar="DIR",
                        help="the reports folder (default ./reports)")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("reports", help="verify and read the run history")
    _reports_dir(p, "reports")
    inner = p.add_subparsers(dest="reports_command", required=True)
    verify = inner.add_parser(
        "verify", help="check the history chain and every artefact of every run")
    verify.add_argument(
        "--expect-head", metavar="HASH",
        help="also fail unless the last line's SHA-256 is HASH (the head a run printed "
        "and CI kept): detects lines dropped from the end, which the chain cannot")
    ls = inner.add_parser("list", help="recent runs, newest first")
    ls.add_argument("-n", type=int, default=20, help="how many (default 20)")
    show = inner.add_parser("show", help="one run's checks and messages")
    show.add_argument("run", help="run id (or 'latest')")
    show.add_argument("--json", action="store_true", help="print summary.json as is")
    # Accepted after the subcommand too (`opsgate reports verify --reports-dir DIR`);
    # SUPPRESS keeps the value given before it when this one is absent.
    for parser in (verify, ls, show):
        _reports_dir(parser, argparse.SUPPRESS)
    p.set_defaults(handler=run)


def _say(text: str) -> None:
    print(f"opsgate reports: {text}")


def _verify(root: Path, expect_head: str | None) -> int:
    if expect_head is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", expect_head):
            _say("--expect-head takes a history head: 64 hexadecimal digits")
            return 2
        expect_head = expect_head.lower()
    path = root / HISTORY
    if not path.exists():
        if expect_head:
            _say(f"history MISSING: no {path}, but --expect-head names a head it had "
                 "(history deleted, or the wrong --reports-dir)")
            return 1
        _say(f"no history at {path}")
        return 2
    try:
        lines = history.read_lines(path)
    except (OSError, UnicodeDecodeError) as exc:
        _say(f"history unreadable: {exc.__class__.__name__}: {exc}")
        return 1
    problems: list[str] = []
    chain = history.verify(path)
    if not chain.ok:
        problems.append(f"history BROKEN at line {chain.broken_at} of {chain.lines}: "
                        f"{chain.reason}")
    listed_dirs = set()
    for i, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the chain check named it
        if not isinstance(entry, dict):
            continue
        run_name = f"run {entry.get('run_id', '?')} (line {i})"
        where = entry.get("dir")
        if not isinstance(where, str) or not where:
            problems.append(f"{run_name}: the line names no run directory")
            continue
        run_dir = root / where
        listed_dirs.add(run_dir.resolve())
        try:
            found = seal.check(run_dir, entry, history.line_hash(line))
        except OSError as exc:
            found = [f"unreadable: {exc.__class__.__name__}: {exc}"]
        problems += [f"{run_name}: {p}" for p in found[:MAX_PER_RUN]]
        if len(found) > MAX_PER_RUN:
            problems.append(f"{run_name}: ... and {len(found) - MAX_PER_RUN} more")
    head = history.line_hash(lines[-1]) if lines else None
    if expect_head and head != expect_head:
        hashes = [history.line_hash(ln) for ln in lines]
        if expect_head in hashes:
            k = hashes.index(expect_head) + 1
            problems.append(f"head is line {len(lines)}'s {head}, not {expect_head}, which "
                            f"is line {k}: {len(lines) - k} line(s) added after it")
        else:
            problems.append(f"head is {head or 'none (empty history)'}, and {expect_head} is "
                            "no line of the history: lines were dropped from its end, or it "
                            "was rewritten")
    for extra in _unlisted_runs(root, listed_dirs):
        _say(f"note: {extra} is not in the history (a run still going, one killed before "
             "its end, or one added by hand): nothing in it is vouched for")
    if problems:
        for p in problems:
            _say(p)
        return 1
    runs = f"{len(lines)} run{'' if len(lines) == 1 else 's'}"
    _say(f"history intact ({runs}, every listed artefact unchanged); head {head or 'none'}")
    return 0


def _unlisted_runs(root: Path, listed: set[Path]) -> list[str]:
    runs = root / "runs"
    if not runs.is_dir():
        return []
    return [f"runs/{d.name}" for d in sorted(runs.iterdir())
            if d.is_dir() and d.resolve() not in listed]


def _entries(root: Path) -> list[dict[str, Any]]:
    """The history's run records, saying first if some lines are not run records."""
    found, bad = history.read_entries(root / HISTORY)
    if bad:
        _say(f"{bad} line(s) of {root / HISTORY} are not run records (damaged or edited): "
             "run `opsgate reports verify`")
    return found


#: `list`'s columns; a run id is a UTC timestamp and the target's name.
#: The run's id ends in its target's name; "kind" says what the target was (a sandbox
#: built for the run, an environment's settings, a rollback's project).
LIST_HEADER = ("run", "verdict", "kind", "tests", "marker expression")


def _list_row(run: str, verdict: str, target: str, tests: str, rest: str) -> str:
    return f"{run:<45} {verdict:<11} {target:<11} {tests:<28} {rest}".rstrip()


def _list(root: Path, n: int) -> int:
    """The last ``n`` runs, newest first (the one an auditor asks about is usually the
    last), under a line naming the columns."""
    entries = _entries(root)
    if not entries:
        print("opsgate reports: no runs yet")
        return 0
    print(_list_row(*LIST_HEADER))
    for e in reversed(entries[-n:] if n > 0 else []):
        c = e.get("counts", {})
        rollback = e.get("kind") == "rollback"  # a guarded operation: no tests, no markers
        label = "  rollback: " if rollback else "  gate: "
        gate = label + "; ".join(e["notes"]) if e.get("notes") else ""
        if e.get("partial_checks"):
            gate += "  PARTIAL: " + ", ".join(e["partial_checks"])
        tests = ("-" if rollback else
                 f"passed {c.get('passed', 0)} failed {c.get('failed', 0)} "
                 f"error {c.get('error', 0)}"
                 + (f" interrupted {c['interrupted']}" if c.get("interrupted") else ""))
        print(_list_row(str(e["run_id"]), str(e.get("verdict", "?")),
                        str(e.get("target_kind", "")), tests,
                        f"{e.get('marker_expression', '')}{gate}".strip()))
    return 0


def _summary_mismatch(summary_path: Path, entry: dict[str, Any]) -> str | None:
    """One line when summary.json is not the file its history line vouches for: what
    `show` prints would otherwise pass for the run's record."""
    artefacts = entry.get("artefacts")
    listed = (artefacts.get("summary.json") if isinstance(artefacts, dict)
              else entry.get("summary_sha256"))
    if not isinstance(listed, str):
        return None
    actual = seal.sha256_file(summary_path)
    if actual == listed:
        return None
    return (f"WARNING: {summary_path} changed after the run: its SHA-256 is {actual}, "
            f"the history lists {listed}; what follows is not the run's record "
            "(run `opsgate reports verify`)")


def _show(root: Path, run_id: str, as_json: bool) -> int:
    entries = _entries(root)
    if run_id == "latest" and entries:
        run_id = entries[-1]["run_id"]
    match = [e for e in entries if e.get("run_id") == run_id]
    summary_path = root / str(match[0].get("dir", f"runs/{run_id}") if match
                              else f"runs/{run_id}") / "summary.json"
    if not summary_path.exists():
        print(f"opsgate reports: no run {run_id!r}")
        return 2
    summary = summary_reader.load(summary_path)
    if summary is None:
        print(f"opsgate reports: {summary_path} is not a readable summary (not a JSON "
              "object); run `opsgate reports verify`")
        return 2
    mismatch = _summary_mismatch(summary_path, match[0]) if match else None
    if as_json:
        if mismatch:  # stderr: stdout stays the JSON document
            print(f"opsgate reports: {mismatch}", file=sys.stderr)
        print(json.dumps(summary, indent=2))
        return 1 if mismatch else 0
    if mismatch:
        _say(mismatch)
    partial = summary.get("partial_checks") or []
    verdict = summary["verdict"].upper() + (", PARTIAL" if partial else "")
    print(f"{summary['run_id']}: {verdict} ({summary['target_kind']} "
          f"{summary['target'].get('name')}, {summary['marker_expression']})")
    if not match:
        print("  NOT IN THE HISTORY: nothing vouches for this run's files")
    for note in summary.get("notes", []):
        print(f"  gate FAILED: {note}")
    for c in summary["checks"]:
        print(f"  {c['status']:<8} {c['marker']}")
        for reason in c.get("partial", []):
            print(f"      partial: {reason}")
        for t in c["tests"]:
            if t["outcome"] != "passed":
                print(f"      {t['outcome']}: {t['name']}: {t['message'][:300]}")
    print(f"  report: {summary_path.parent / 'report.html'}")
    return 1 if mismatch else 0


def run(args: argparse.Namespace) -> int:
    root = Path(args.reports_dir)
    if args.reports_command == "verify":
        return _verify(root, args.expect_head)
    if args.reports_command == "list":
        return _list(root, args.n)
    return _show(root, args.run, args.json)
