"""Two tiny inline SVG charts: a verdict strip and a sparkline.

Written by hand: the pages must open from ``file://`` with no script and no network, so
a charting library (JavaScript, or a Python one that pulls a plotting stack) would add
far more than these few elements. Every label passes through ``html.escape``.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

COLOURS = {"passed": "#16a34a", "partial": "#d97706", "failed": "#dc2626",
           "interrupted": "#7c3aed"}


def verdict_strip(cells: Sequence[tuple[str, str]], size: int = 14) -> str:
    """One square per run, oldest left: ``cells`` are (verdict, tooltip)."""
    if not cells:
        return ""
    gap = 3
    width = len(cells) * (size + gap)
    parts = [f"<svg class='strip' role='img' aria-label='verdicts of the last {len(cells)} "
             f"runs' width='{width}' height='{size}' viewBox='0 0 {width} {size}' "
             "xmlns='http://www.w3.org/2000/svg'>"]
    for i, (verdict, tip) in enumerate(cells):
        colour = COLOURS.get(verdict, "#9ca3af")
        parts.append(f"<rect x='{i * (size + gap)}' y='0' width='{size}' height='{size}' "
                     f"rx='2' fill='{colour}'><title>{escape(tip)}</title></rect>")
    parts.append("</svg>")
    return "".join(parts)


def sparkline(values: Sequence[int | None], width: int = 160, height: int = 28) -> str:
    """A line through ``values`` (None: a run that did not count), its last point marked,
    a drop to zero in red."""
    known = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(known) < 2:
        return "<span class='muted'>one run</span>" if known else ""
    lo = min(v for _, v in known)
    hi = max(v for _, v in known)
    span = (hi - lo) or 1
    step = (width - 6) / max(1, len(values) - 1)

    def xy(i: int, v: int) -> tuple[float, float]:
        if hi == lo:  # unchanged: a level line through the middle
            return 3 + i * step, height / 2
        return 3 + i * step, height - 3 - (v - lo) / span * (height - 6)

    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in known))
    last_i, last_v = known[-1]
    lx, ly = xy(last_i, last_v)
    colour = "#dc2626" if last_v == 0 and hi > 0 else "#2563eb"
    return (f"<svg class='spark' role='img' aria-label='from {known[0][1]} to {last_v}' "
            f"width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
            "xmlns='http://www.w3.org/2000/svg'>"
            f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{points}'/>"
            f"<circle cx='{lx:.1f}' cy='{ly:.1f}' r='2.5' fill='{colour}'/></svg>")
