"""A check's evidence as HTML tables an auditor reads without expanding JSON.

Checks put plain JSON values into their evidence (opsgate/verify/evidence.py), and new
checks arrive without telling the reports; so the rendering is by shape, not by check:

* a dict of scalars is a two-column table (name, value);
* a dict whose values are all dicts of scalars (``{"kb": {...}, "payload": {...}}``,
  health's ``trend.tables``) is one table, a row per key, a column per inner key: the
  two sides of a comparison sit next to each other;
* a list of dicts (the drill's ``tables``, drift's examples, blob objects) is a table
  with a column per key; a row whose ``match`` is false is marked;
* a list of scalars is a bounded comma list; anything else nests.

Columns are ordered so that each pair compared is adjacent (``source_rows`` next to
``restored_rows``, ``previous`` next to ``now``), whatever order the JSON had.

Hand-written rather than a template engine: the whole of it is a recursive walk over
JSON with ``html.escape`` on every string, smaller than a template and its loader.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

#: Rows of one table and items of one list shown before "... and N more".
MAX_ROWS = 200
MAX_ITEMS = 40
#: Depth past which a value is shown as compact text (evidence is shallow in practice).
MAX_DEPTH = 5

#: Keys that name a row come first; then each compared pair, old before new.
COLUMN_ORDER = (
    "table", "name", "key", "pathname", "id", "path", "kind", "label",
    "source_rows", "restored_rows", "source_sha256", "restored_sha256",
    "previous", "now", "change", "old", "new", "expected", "actual",
    "payload", "kb", "blob", "neon", "api", "database", "metadata",
    "fields", "diffs", "match",
)
_HASH = re.compile(r"[0-9a-f]{64}")


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _is_short_list(v: Any) -> bool:
    return isinstance(v, list) and all(_is_scalar(x) for x in v)


def _order(keys: list[str]) -> list[str]:
    rank = {k: i for i, k in enumerate(COLUMN_ORDER)}
    first_seen = {k: i for i, k in enumerate(keys)}
    return sorted(keys, key=lambda k: (rank.get(k, len(COLUMN_ORDER)), first_seen[k]))


def scalar(v: Any) -> str:
    """One value as escaped HTML: hashes in code, booleans as words that stand out."""
    if v is None:
        return "<span class='muted'>none</span>"
    if isinstance(v, bool):
        return "<span class='ok'>yes</span>" if v else "<span class='bad'>no</span>"
    if isinstance(v, float):
        return escape(f"{v:g}")
    text = str(v)
    if _HASH.fullmatch(text):
        return f"<code class='hash'>{escape(text)}</code>"
    return escape(text)


def _list_of_scalars(items: list[Any]) -> str:
    if not items:
        return "<span class='muted'>none</span>"
    shown = ", ".join(scalar(x) for x in items[:MAX_ITEMS])
    more = len(items) - MAX_ITEMS
    return shown + (f" <span class='muted'>… and {more} more</span>" if more > 0 else "")


def _table(head: list[str] | None, rows: list[tuple[list[str], bool]], more: int) -> str:
    out = ["<table class='ev'>"]
    if head is not None:
        out += ["<tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr>"]
    width = len(head) if head else 2
    for cells, bad in rows:
        cls = " class='badrow'" if bad else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if more > 0:
        out.append(f"<tr><td colspan='{width}' class='muted'>… and {more} more</td></tr>")
    out.append("</table>")
    return "".join(out)


def _rows_of_dicts(rows: list[dict[str, Any]], depth: int,
                   names: list[str] | None = None) -> str:
    """A table of ``rows``; ``names`` puts a first column naming each row."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    columns = _order(keys)
    body = []
    for i, row in enumerate(rows[:MAX_ROWS]):
        cells = [render(row[k], depth + 1) if k in row else "" for k in columns]
        if names is not None:
            cells.insert(0, f"<b>{escape(names[i])}</b>")
        body.append((cells, row.get("match") is False))
    head = ([""] if names is not None else []) + columns
    return _table(head, body, len(rows) - MAX_ROWS)


def _is_flat_dict(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and all(
        _is_scalar(x) or _is_short_list(x) for x in v.values())


def render(value: Any, depth: int = 0) -> str:
    """``value`` (any JSON) as HTML; every string escaped."""
    if _is_scalar(value):
        return scalar(value)
    if depth >= MAX_DEPTH:
        return f"<code>{escape(str(value)[:500])}</code>"
    if isinstance(value, list):
        if _is_short_list(value):
            return _list_of_scalars(value)
        if all(isinstance(x, dict) for x in value):
            return _rows_of_dicts(value, depth)
        return "<ul>" + "".join(f"<li>{render(x, depth + 1)}</li>"
                                for x in value[:MAX_ITEMS]) + "</ul>"
    if isinstance(value, dict):
        if not value:
            return "<span class='muted'>none</span>"
        if len(value) >= 2 and all(_is_flat_dict(v) for v in value.values()):
            return _rows_of_dicts(list(value.values()), depth, [str(k) for k in value])
        rows = [([f"<b>{escape(str(k))}</b>", render(v, depth + 1)], False)
                for k, v in list(value.items())[:MAX_ROWS]]
        return _table(None, rows, len(value) - MAX_ROWS)
    return escape(str(value))
