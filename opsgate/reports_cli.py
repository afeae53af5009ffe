"""``opsgate reports verify|list|show``: read the run history as an auditor would."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from .reports import history
from .reports.writer import HISTORY


def add_parser(sub: Any) -> None:
    p = sub.add_parser("reports", help="verify and read the run history")
    p.add_argument("--reports-dir", default="reports", metavar="DIR",
                   help="the reports folder (default ./reports)")
    inner = p.add_subparsers(dest="reports_command", required=True)
    inner.add_parser("verify", help="check the history chain and each run's summary.json")
    ls = inner.add_parser("list", help="recent runs")
    ls.add_argument("-n", type=int, default=20, help="how many (default 20)")
    show = inner.add_parser("show", help="one run's checks and messages")
    show.add_argument("run", help="run id (or 'latest')")
    show.add_argument("--json", action="store_true", help="print summary.json as is")
    p.set_defaults(handler=run)


def _verify(root: Path) -> int:
    path = root / HISTORY
    if not path.exists():
        print(f"opsgate reports: no history at {path}")
        return 2
    check = history.verify(path)
    if not check.ok:
        print(f"opsgate reports: history BROKEN at line {check.broken_at} of {check.lines}: "
              f"{check.reason}")
        return 1
    altered = []
    for entry in history.entries(path):
        summary = root / entry.get("dir", "") / "summary.json"
        if summary.exists():
            digest = hashlib.sha256(summary.read_bytes()).hexdigest()
            if digest != entry.get("summary_sha256"):
                altered.append(entry["run_id"])
    if altered:
        print("opsgate reports: history intact, but summary.json changed after the run for: "
              + ", ".join(altered))
        return 1
    print(f"opsgate reports: history intact ({check.lines} runs)")
    return 0


def _list(root: Path, n: int) -> int:
    entries = history.entries(root / HISTORY)
    for e in entries[-n:]:
        c = e.get("counts", {})
        print(f"{e['run_id']:<45} {e['verdict']:<7} {e.get('target_kind', ''):<11} "
              f"passed {c.get('passed', 0)} failed {c.get('failed', 0)} "
              f"error {c.get('error', 0)}  {e.get('marker_expression', '')}")
    if not entries:
        print("opsgate reports: no runs yet")
    return 0


def _show(root: Path, run_id: str, as_json: bool) -> int:
    entries = history.entries(root / HISTORY)
    if run_id == "latest" and entries:
        run_id = entries[-1]["run_id"]
    match = [e for e in entries if e["run_id"] == run_id]
    summary_path = root / (match[0]["dir"] if match else f"runs/{run_id}") / "summary.json"
    if not summary_path.exists():
        print(f"opsgate reports: no run {run_id!r}")
        return 2
    summary = json.loads(summary_path.read_text())
    if as_json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['run_id']}: {summary['verdict'].upper()} ({summary['target_kind']} "
          f"{summary['target'].get('name')}, {summary['marker_expression']})")
    for c in summary["checks"]:
        print(f"  {c['status']:<8} {c['marker']}")
        for t in c["tests"]:
            if t["outcome"] != "passed":
                print(f"      {t['outcome']}: {t['name']}: {t['message'][:300]}")
    print(f"  report: {summary_path.parent / 'report.html'}")
    return 0


def run(args: argparse.Namespace) -> int:
    root = Path(args.reports_dir)
    if args.reports_command == "verify":
        return _verify(root)
    if args.reports_command == "list":
        return _list(root, args.n)
    return _show(root, args.run, args.json)
