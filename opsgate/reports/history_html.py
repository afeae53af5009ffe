"""``reports/history.html``: every run of the history at a glance (verdicts as a strip,
each run's line, hash and counts, each table's row count over the runs).

Rewritten after each run from ``history.jsonl`` and the runs' ``summary.json`` files,
which are redacted already; it is a view of the history, not part of it, so no line
lists it (``opsgate reports verify`` checks the files it is made from). Self-contained:
inline CSS and SVG, no script, opens from ``file://``.
"""

from __future__ import annotations

from html import escape

from opsgate.reports import svg, timeline
from opsgate.reports.html import CSS

NAME = "history.html"


def _status(p: timeline.Point) -> str:
    return "partial" if p.verdict == "passed" and p.partial else p.verdict


def _counts_table(runs: list[timeline.Point]) -> str:
    """Per target, each table's count over the runs that counted rows."""
    out = []
    for target in dict.fromkeys(p.target for p in runs if p.counts):
        series, tables = timeline.count_series(runs, target)
        shown = series[-8:]
        head = "".join(f"<th title='{escape(p.run_id)}'>line {p.line}</th>" for p in shown)
        rows = []
        for t in tables:
            values = [p.counts.get(t) for p in series]
            cells = "".join(f"<td>{'' if p.counts.get(t) is None else p.counts.get(t)}</td>"
                            for p in shown)
            bad = " class='badrow'" if values[-1] == 0 and any(values[:-1]) else ""
            rows.append(f"<tr{bad}><td><b>{escape(t)}</b></td><td>{svg.sparkline(values)}"
                        f"</td>{cells}</tr>")
        out.append(f"<h3>{escape(target)}: row counts ({len(series)} runs)</h3>"
                   "<table class='ev'><tr><th>table</th><th>trend</th>" + head + "</tr>"
                   + "".join(rows) + "</table>")
    return "".join(out) or "<p class='muted'>no run counted rows (the health check)</p>"


def render(runs: list[timeline.Point], total_lines: int) -> str:
    strip = svg.verdict_strip([(_status(p), f"line {p.line}: {p.run_id}: {_status(p)}")
                               for p in runs])
    rows = []
    for p in reversed(runs):
        tests = ", ".join(f"{k} {v}" for k, v in p.tests.items() if v)
        rows.append(
            f"<tr><td>{p.line}</td><td><a href='runs/{escape(p.run_id)}/report.html'>"
            f"{escape(p.run_id)}</a></td><td><span class='badge {escape(_status(p))}'>"
            f"{escape(_status(p))}</span></td><td>{escape(p.target)}</td>"
            f"<td>{escape(tests)}</td><td>{escape('; '.join(p.notes))}</td>"
            f"<td><code class='hash'>{escape(p.line_sha256)}</code>"
            "</td></tr>")
    head = runs[-1].line_sha256 if runs else "none"
    verify = "opsgate reports verify" + (f" --expect-head {head}" if runs else "")
    shown = (f"the last {len(runs)} of {total_lines} lines" if len(runs) < total_lines
             else f"{total_lines} line{'s' if total_lines != 1 else ''}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>opsgate history</title><style>{CSS}</style></head><body>
<h1>opsgate release gate: history</h1>
<p class="muted">history.jsonl, {escape(shown)}; head <code class="hash">{escape(head)}</code>.
A view of the history: check it with <code>{escape(verify)}</code>.</p>
<h2>Verdicts, oldest first</h2>
<p>{strip}</p>
<h2>Row counts</h2>
{_counts_table(runs)}
<h2>Runs, newest first</h2>
<table id="runs" class="wide"><tr><th>line</th><th>run</th><th>verdict</th><th>target</th>
<th>tests</th><th>why (beyond single checks)</th><th>line SHA-256 (the head, for the last)</th></tr>
{''.join(rows)}</table>
</body></html>
"""
