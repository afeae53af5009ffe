"""``report.html``: one self-contained page (inline CSS, no script, no network) that an
auditor opens in a browser: verdict, target, each check with its evidence and diffs."""

from __future__ import annotations

import json
from html import escape

from opsgate.reports.model import RunRecord

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem;margin:.2rem 0}.muted{color:#5b6475}
.verdict{padding:1rem 1.2rem;border-radius:8px;font-size:1.3rem;font-weight:700;margin:1rem 0}
.passed{background:#e4f6e8;color:#14532d}.partial{background:#fef3c7;color:#78350f}.failed{background:#fde8e8;color:#7f1d1d}
.skipped,.notrun{background:#f1f3f7;color:#374151}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #e5e7eb;vertical-align:top}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:999px;font-size:.8rem;
font-weight:600}
details{margin:.4rem 0 1rem;border:1px solid #e5e7eb;border-radius:6px;padding:.4rem .8rem}
summary{cursor:pointer;font-weight:600}
pre{background:#f8fafc;padding:.7rem;overflow:auto;font-size:12.5px;border-radius:4px;
white-space:pre-wrap;word-break:break-word}
.msg{color:#7f1d1d;white-space:pre-wrap}
code{font-size:12.5px}
.gate{background:#fde8e8;color:#7f1d1d;padding:.6rem 1.2rem;border-radius:8px;margin:1rem 0}
.gate ul{margin:.3rem 0}
"""


def _badge(status: str) -> str:
    cls = status.replace(" ", "")
    return f'<span class="badge {cls}">{escape(status)}</span>'


def render(record: RunRecord, previous_href: str | None) -> str:
    s = record.summary()
    target = s["target"]
    rows = []
    details = []
    for c in s["checks"]:
        rows.append(
            f"<tr><td><b>{escape(c['marker'])}</b><br><span class='muted'>"
            f"{escape(c['title'])}</span></td><td>{_badge(c['status'])}</td>"
            f"<td>{len(c['tests'])}</td><td>{c['duration_s']:.2f} s</td></tr>")
        if not c["tests"]:
            continue
        parts = [f"<h3 id='{escape(c['marker'])}'>{escape(c['marker'])} "
                 f"{_badge(c['status'])}</h3>"]
        parts += [f"<p class='msg'>Partial: {escape(p)}</p>" for p in c.get("partial", [])]
        for t in c["tests"]:
            body = ""
            if t["message"]:
                body += f"<p class='msg'>{escape(t['message'])}</p>"
            if t["evidence"]:
                body += ("<pre>" + escape(json.dumps(t["evidence"], indent=2, sort_keys=True,
                                                     default=str)) + "</pre>")
            parts.append(f"<details{' open' if t['outcome'] != 'passed' else ''}><summary>"
                         f"{escape(t['name'])} {_badge(t['outcome'])} "
                         f"<span class='muted'>{t['duration_s']:.2f} s</span></summary>"
                         f"{body or '<p class=muted>no evidence recorded</p>'}</details>")
        details.append("\n".join(parts))
    prev = (f"<a href='{escape(previous_href)}'>previous run ({escape(s['previous_run'] or '')})"
            "</a>" if previous_href else "no previous run")
    counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items())
    verdict = escape(s["verdict"].upper()) + (
        ", PARTIAL (" + escape(", ".join(s["partial_checks"])) + " did not verify everything: "
        "see below)" if s.get("partial_checks") else "")
    gate = ""
    if s["notes"]:  # failures of the gate itself ("no check ran"), not of one check
        gate = ("<div class='gate' id='gate-failures'><b>Gate failures</b> (the gate "
                "failed for these, whatever the checks below say)<ul>"
                + "".join(f"<li>{escape(n)}</li>" for n in s["notes"]) + "</ul></div>")
    target_rows = "".join(f"<tr><th>{escape(k)}</th><td><code>{escape(str(v))}</code></td></tr>"
                          for k, v in target.items() if v is not None)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>opsgate {escape(s['verdict'])}: {escape(s['run_id'])}</title>
<style>{CSS}</style></head><body>
<p class="muted">opsgate {escape(s['opsgate_version'])} · run {escape(s['run_id'])} · {prev}</p>
<h1>Release gate report</h1>
<div class="verdict {escape(s['verdict'])}" id="verdict">Verdict: {verdict}
<span class="muted" style="font-size:1rem;font-weight:400"> — {escape(counts)}</span></div>
{gate}
<table><tr><th>started</th><td>{escape(s['started_at'])}</td></tr>
<tr><th>finished</th><td>{escape(s['finished_at'])} ({s['duration_s']:.1f} s)</td></tr>
<tr><th>target kind</th><td>{escape(s['target_kind'])}</td></tr>{target_rows}
<tr><th>marker expression</th><td><code>{escape(s['marker_expression'])}</code>
({escape(s['expression_source'])})</td></tr>
<tr><th>hashes</th><td>canon-v1 (docs/canonical-hashing.md)</td></tr></table>
<h2>Checks</h2>
<table id="checks"><tr><th>check</th><th>status</th><th>tests</th><th>time</th></tr>
{''.join(rows)}</table>
<h2>Evidence</h2>
{''.join(details)}
</body></html>
"""
