"""The run as Markdown for ``$GITHUB_STEP_SUMMARY``: what a CI reader needs on the run's
page without downloading the artefacts (verdict, target, expression, each check with its
key figures and, when red, why; the history head and the command that checks it).

Every value that comes from the run passes through the redactor; the head never does (a
redactor must not rewrite a digest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from opsgate.reports import figures, reasons
from opsgate.reports.model import RunRecord

#: Causes listed before "... and N more" (the rest is in report.html).
MAX_REASONS = 10
#: Characters of one failure message in the summary.
MESSAGE_WIDTH = 300


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("`", "'").replace("\n", " ")


def step_summary(record: RunRecord, head: str, root: Path, redact: Callable[[str], str],
                 cwd: Path) -> str:
    """The run in a short Markdown block for ``$GITHUB_STEP_SUMMARY``."""
    counts = ", ".join(f"{k} {v}" for k, v in record.counts().items())
    checks = record.checks()
    failed = [c["marker"] for c in checks if c["status"] == "failed"]
    unfinished = [c["marker"] for c in checks if c["status"] == "interrupted"]
    partial = [c["marker"] for c in checks if c["status"] == "partial"]
    try:
        where = root.relative_to(cwd.resolve()).as_posix() or "."
    except ValueError:
        where = str(root)
    rows = [
        ("verdict", f"**{record.verdict.upper()}** (exit status {record.exit_status})"
         + ("; PARTIAL: " + ", ".join(partial) if partial else "")),
        ("target", f"{_cell(record.target_kind)} `{_cell(record.target.get('name'))}`"),
        ("marker expression", f"`{_cell(record.expression)}` "
                              f"({_cell(record.expression_source)})"),
        ("tests", _cell(counts)),
        ("failed checks", _cell(", ".join(failed) or "none")),
        *([("interrupted checks", _cell(", ".join(unfinished)))] if unfinished else []),
        ("run", f"`{_cell(record.run_id)}`"),
    ]
    out = [f"### opsgate release gate: {record.verdict.upper()}", "", "| | |", "|---|---|"]
    out += [f"| {k} | {redact(v)} |" for k, v in rows]
    out.append(f"| history head | `{head}` |")  # never through the redactor: a digest
    if record.notes:
        out += ["", "Gate failures:", *[f"- {_cell(redact(n))}" for n in record.notes]]
    found = reasons.causes(checks)
    lines = []
    for cause in found[:MAX_REASONS]:
        named = ", ".join(f"**{_cell(t['marker'])}** `{_cell(redact(t['name']))}`"
                          for t in cause.tests[:3])
        more = f" and {len(cause.tests) - 3} more" if len(cause.tests) > 3 else ""
        lines.append(f"- {named}{more} {cause.outcome}: "
                     f"{_cell(reasons.cut(redact(cause.message), MESSAGE_WIDTH))}")
    if lines:
        out += ["", "Why it failed:", *lines]
        if len(found) > MAX_REASONS:
            out.append(f"- ... and {len(found) - MAX_REASONS} more causes (report.html)")
    out += ["", "| check | status | tests | key figures |", "|---|---|---|---|"]
    for c in checks:
        figs = "; ".join(figures.of_check(c)) or "-"
        out.append(f"| {_cell(c['marker'])} | {_cell(c['status'])} | {len(c['tests'])} | "
                   f"{_cell(redact(figs))} |")
    out += ["", "Check the run's reports later against this head (with its reports folder "
            "restored from the CI artefacts):", "", "```sh",
            f"opsgate reports verify --reports-dir {where} --expect-head {head}", "```", ""]
    return "\n".join(out) + "\n"
