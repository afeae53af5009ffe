"""``report.html``: one self-contained page (inline CSS and SVG, no script, no network)
that an auditor reads without clicking: why the run failed first, then the run's place
in the history, each check with its key figures, health's counts across runs, and every
check's evidence as tables (reports/evidence_html.py).

The page is one of the artefacts its history line hashes, so it cannot hold that line's
own hash (the new head): it names the line it will be, the head before it (the new
line's ``prev_sha256``) and summary.json's SHA-256; the new head is in junit.xml, on the
terminal, in the step summary and on ``history.html``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from typing import Any

from opsgate.reports import evidence_html, figures, reasons, summary_reader, svg, timeline
from opsgate.reports.model import RunRecord

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2rem auto;
max-width:1180px;color:#1d2330;padding:0 1rem}
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.4rem 0 .4rem}
h3{font-size:1.05rem;margin:1rem 0 .3rem}h4{font-size:.95rem;margin:.7rem 0 .2rem}
.muted{color:#5b6475}.ok{color:#15803d;font-weight:600}.bad{color:#b91c1c;font-weight:700}
.verdict{padding:.7rem 1.1rem;border-radius:8px;font-size:1.25rem;font-weight:700;margin:.6rem 0}
.passed{background:#e4f6e8;color:#14532d}.partial{background:#fef3c7;color:#78350f}
.failed,.error{background:#fde8e8;color:#7f1d1d}
.interrupted{background:#ede9fe;color:#4c1d95}
.skipped,.notrun{background:#f1f3f7;color:#374151}
table{border-collapse:collapse;margin:.3rem 0 .8rem}
th,td{text-align:left;padding:.3rem .55rem;border-bottom:1px solid #e5e7eb;vertical-align:top}
table.wide{width:100%}
table.ev{font-size:13px;background:#fff}table.ev table.ev{margin:0}
table.ev th{background:#f3f4f6;font-weight:600}
tr.badrow td{background:#fde8e8}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.8rem;
font-weight:600}
details{margin:.3rem 0 .8rem;border:1px solid #e5e7eb;border-radius:6px;padding:.3rem .8rem}
summary{cursor:pointer;font-weight:600}
pre{background:#f8fafc;padding:.7rem;overflow:auto;font-size:12px;border-radius:4px;
white-space:pre-wrap;word-break:break-word}
.msg{color:#7f1d1d;white-space:pre-wrap;margin:.3rem 0}
code{font-size:12.5px}code.hash{font-size:11.5px;word-break:break-all}
.reasons{background:#fde8e8;color:#7f1d1d;padding:.6rem 1.1rem;border-radius:8px;margin:.6rem 0}
.reasons ol,.reasons ul{margin:.3rem 0;padding-left:1.3rem}.reasons li{margin:.25rem 0}
.reasons a{color:#7f1d1d}
.partialbox{background:#fef3c7;color:#78350f;padding:.5rem 1.1rem;border-radius:8px}
.cols{display:flex;gap:2rem;flex-wrap:wrap}.cols>div{flex:1 1 420px}
"""


@dataclass
class Position:
    """Where the run goes in ``history.jsonl`` (known before its line is written)."""

    line: int
    previous_head: str | None
    summary_sha256: str
    history_href: str | None = None


def _badge(status: str) -> str:
    return f'<span class="badge {escape(status.replace(" ", ""))}">{escape(status)}</span>'


def _anchor(nodeid: str) -> str:
    return "t-" + "".join(ch if ch.isalnum() else "-" for ch in nodeid)


#: Causes listed in "Why it failed", and characters of each message there (the whole
#: message is with the test's evidence, further down).
MAX_CAUSES = 20
MESSAGE_WIDTH = 700
#: Tests named per cause before "and N more".
MAX_NAMED = 6


def _reasons(s: dict[str, Any]) -> str:
    """Every cause of a red verdict, one line each, linked to its evidence."""
    found = reasons.causes(s["checks"])
    items = []
    for cause in found[:MAX_CAUSES]:
        named = []
        for marker, hit in cause.by_check().items():  # one cause, each check it hit
            links = [f"<a href='#{_anchor(t['nodeid'])}'>{escape(t['name'])}</a>"
                     for t in hit[:MAX_NAMED]]
            if len(hit) > MAX_NAMED:
                links.append(f"and {len(hit) - MAX_NAMED} more")
            named.append(f"<b>{escape(marker)}</b> · {', '.join(links)}")
        kind = (f" <span class='muted'>({escape(cause.kind)})</span>" if cause.kind
                else "")
        items.append(f"<li>{'; '.join(named)} {escape(cause.outcome)}: "
                     f"{escape(reasons.cut(cause.message, MESSAGE_WIDTH))}{kind}</li>")
    if len(found) > MAX_CAUSES:
        items.append(f"<li>… and {len(found) - MAX_CAUSES} more causes (below)</li>")
    if not items:
        if s["verdict"] != "passed" and not s["notes"]:  # no test or note to blame
            items.append(f"<li>pytest exit status {s['exit_status']} (see the terminal "
                         "output of the run)</li>")
        else:
            return ""
    tests = sum(len(c.tests) for c in found)
    return ("<div class='reasons' id='reasons'><b>Why it failed</b> "
            f"({len(found)} cause{'s' if len(found) != 1 else ''}"
            f"{f', {tests} tests' if tests != len(found) else ''})<ol>"
            + "".join(items) + "</ol></div>")


def _partial(s: dict[str, Any]) -> str:
    lines = [f"<li><b>{escape(c['marker'])}</b>: {escape(p)}</li>"
             for c in s["checks"] for p in c.get("partial", [])]
    if not lines:
        return ""
    return ("<div class='partialbox' id='partial'><b>Passed, but not everything was "
            "verified</b><ul>" + "".join(lines) + "</ul></div>")


def _facts(s: dict[str, Any], pos: Position | None) -> str:
    target = "".join(f"<tr><th>{escape(k)}</th><td><code>{escape(str(v))}</code></td></tr>"
                     for k, v in s["target"].items() if v is not None)
    run = (f"<table id='run'><tr><th>started</th><td>{escape(s['started_at'])}</td></tr>"
           f"<tr><th>finished</th><td>{escape(s['finished_at'])} "
           f"({s['duration_s']:.1f} s)</td></tr>"
           f"<tr><th>target kind</th><td>{escape(s['target_kind'])}</td></tr>{target}"
           f"<tr><th>marker expression</th><td><code>{escape(s['marker_expression'])}"
           f"</code> ({escape(s['expression_source'])})</td></tr>"
           f"<tr><th>exit status</th><td>{s['exit_status']}</td></tr>"
           "<tr><th>hashes</th><td>canon-v1 (docs/canonical-hashing.md)</td></tr></table>")
    if pos is None:
        return run
    where = (f"<a href='{escape(pos.history_href)}'>history.jsonl</a>" if pos.history_href
             else "history.jsonl")
    hist = (
        "<table id='position'>"
        f"<tr><th>history line</th><td>{pos.line} of {where}</td></tr>"
        f"<tr><th>summary.json SHA-256</th><td><code class='hash'>"
        f"{escape(pos.summary_sha256)}</code></td></tr>"
        "<tr><th>head before this run</th><td>"
        + (f"<code class='hash'>{escape(pos.previous_head)}</code>" if pos.previous_head
           else "none: the first run of this history")
        + " <span class='muted'>(this line's <code>prev_sha256</code>)</span></td></tr>"
        "<tr><th>head after this run</th><td class='muted'>the SHA-256 of line "
        f"{pos.line}: printed at the end of the run, in junit.xml "
        "(<code>opsgate_history_head</code>), in the step summary and on history.html. "
        "This page is hashed in that line, so it cannot hold it</td></tr>"
        "<tr><th>verify</th><td><code>opsgate reports verify</code>; with "
        "<code>--expect-head</code> and the head after this run it also detects lines "
        "dropped from the end</td></tr></table>")
    return f"<div class='cols'><div><h2>Run</h2>{run}</div>" \
           f"<div><h2>Position in the history</h2>{hist}</div></div>"


def _checks_table(s: dict[str, Any]) -> str:
    rows = []
    for c in s["checks"]:
        figs = "; ".join(figures.of_check(c))
        rows.append(
            f"<tr><td><b>{escape(c['marker'])}</b><br><span class='muted'>"
            f"{escape(c['title'])}</span></td><td>{_badge(c['status'])}</td>"
            f"<td>{len(c['tests'])}</td><td>{c['duration_s']:.2f} s</td>"
            f"<td>{escape(figs) if figs else '<span class=muted>-</span>'}</td></tr>")
    return ("<table id='checks' class='wide'><tr><th>check</th><th>status</th><th>tests</th>"
            "<th>time</th><th>key figures</th></tr>" + "".join(rows) + "</table>")


def health_trend(runs: list[timeline.Point], now: dict[str, int] | None, run_id: str,
                 target: str, columns: int = 6) -> str:
    """Each table's row count over the target's runs that counted rows, this run last:
    a sparkline and the last ``columns`` counts."""
    earlier, _ = timeline.count_series([p for p in runs if p.run_id != run_id], target)
    if now is None and not earlier:
        return ""
    series = [(p.run_id, p.counts) for p in earlier]
    if now is not None:
        series.append((run_id, now))
    tables: list[str] = []
    for _, counts in series:
        tables += [t for t in counts if t not in tables]
    shown = series[-columns:]
    head = "".join(f"<th title='{escape(r)}'>{'this run' if r == run_id else escape(r[:16])}"
                   "</th>" for r, _ in shown)
    body = []
    for t in tables:
        values = [c.get(t) for _, c in series]
        cells = "".join(f"<td>{'' if c.get(t) is None else c.get(t)}</td>" for _, c in shown)
        dropped = len(values) > 1 and values[-1] is not None and any(
            v is not None and v > (values[-1] or 0) for v in values[:-1])
        cls = " class='badrow'" if dropped and values[-1] == 0 else ""
        body.append(f"<tr{cls}><td><b>{escape(t)}</b></td><td>{svg.sparkline(values)}</td>"
                    f"{cells}</tr>")
    return ("<h2 id='health-trend'>Health counts across runs</h2>"
            f"<p class='muted'>{len(series)} run(s) of target {escape(target)} that counted "
            "rows; a table emptied since an earlier run is marked.</p>"
            "<table class='ev'><tr><th>table</th><th>trend</th>" + head + "</tr>"
            + "".join(body) + "</table>")


def _sides(ev: dict[str, Any]) -> list[list[str]]:
    """Groups of top-level keys holding flat dicts with the same keys (``kb`` and
    ``payload``, ``blob_counts`` and ``neon_counts``): the sides of one comparison."""
    groups: dict[frozenset[str], list[str]] = {}
    for k, v in ev.items():
        if evidence_html._is_flat_dict(v):
            groups.setdefault(frozenset(v), []).append(k)
    return [names for names in groups.values() if len(names) >= 2]


def _evidence(ev: dict[str, Any]) -> str:
    """A test's evidence: its scalars in one table, the sides of a comparison side by
    side, each other structured value under its name."""
    flat = {k: v for k, v in ev.items() if evidence_html._is_scalar(v)
            or evidence_html._is_short_list(v)}
    out = [evidence_html.render(flat)] if flat else []
    done = set(flat)
    for names in _sides(ev):
        out.append(f"<h4>{escape(' vs '.join(names))}</h4>"
                   + evidence_html.render({n: ev[n] for n in names}))
        done.update(names)
    for k, v in ev.items():
        if k not in done:
            out.append(f"<h4>{escape(k)}</h4>{evidence_html.render(v)}")
    raw = escape(json.dumps(ev, indent=2, sort_keys=True, default=str))
    out.append(f"<details><summary class='muted'>as JSON</summary><pre>{raw}</pre></details>")
    return "".join(out)


def _details(s: dict[str, Any]) -> str:
    parts = []
    for c in s["checks"]:
        if not c["tests"]:
            continue
        parts.append(f"<h3 id='{escape(c['marker'])}'>{escape(c['marker'])} "
                     f"{_badge(c['status'])} <span class='muted'>{escape(c['title'])}</span>"
                     "</h3>")
        parts += [f"<p class='msg'>Partial: {escape(p)}</p>" for p in c.get("partial", [])]
        for t in c["tests"]:
            body = ""
            if t["message"]:
                body += f"<p class='msg'>{escape(t['message'])}</p>"
            if t["evidence"]:
                body += _evidence(t["evidence"])
            parts.append(
                f"<details id='{_anchor(t['nodeid'])}' open><summary>"
                f"{escape(t['name'])} {_badge(t['outcome'])} "
                f"<span class='muted'>{t['duration_s']:.2f} s</span></summary>"
                f"{body or '<p class=muted>no evidence recorded</p>'}</details>")
    return "\n".join(parts)


def render(record: RunRecord, previous_href: str | None, position: Position | None = None,
           runs: list[timeline.Point] | None = None) -> str:
    s = record.summary()
    prev = (f"<a href='{escape(previous_href)}'>previous run ({escape(s['previous_run'] or '')})"
            "</a>" if previous_href else "no previous run")
    hist = (f" · <a href='{escape(position.history_href)}'>all runs</a>"
            if position and position.history_href else "")
    counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items())
    status = "partial" if s["verdict"] == "passed" and s.get("partial_checks") else s["verdict"]
    verdict = escape(s["verdict"].upper()) + (
        ", PARTIAL (" + escape(", ".join(s["partial_checks"])) + " did not verify everything: "
        "see below)" if s.get("partial_checks") else "")
    gate = ""
    if s["notes"]:  # failures of the gate itself ("no check ran"), not of one check
        gate = ("<div class='reasons' id='gate-failures'><b>Gate failures</b> (the gate "
                "failed for these, whatever the checks below say)<ul>"
                + "".join(f"<li>{escape(n)}</li>" for n in s["notes"]) + "</ul></div>")
    now = summary_reader.health_counts(s)
    trend = health_trend(runs or [], now.counted() if now is not None else None, s["run_id"],
                         str(s["target"].get("name", "")))
    title = f"opsgate release gate: {s['target'].get('name') or s['target_kind']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>opsgate {escape(s['verdict'])}: {escape(s['run_id'])}</title>
<style>{CSS}</style></head><body>
<p class="muted">opsgate {escape(s['opsgate_version'])} · run {escape(s['run_id'])} ·
{prev}{hist}</p>
<h1>{escape(title)}</h1>
<div class="verdict {escape(status)}" id="verdict">Verdict: {verdict}
<span class="muted" style="font-size:1rem;font-weight:400"> — {escape(counts)}</span></div>
{gate}
{_reasons(s)}
{_partial(s)}
<h2>Checks</h2>
{_checks_table(s)}
{_facts(s, position)}
{trend}
<h2>Evidence</h2>
{_details(s)}
</body></html>
"""
