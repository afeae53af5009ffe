"""One redaction for every artefact of a run.

opsgate writes summary.json, drill-record.md, report.html and environment.properties
itself, from a record whose strings were redacted first. Other writers do not ask:
allure-pytest writes its results and attachments directly (on xdist workers too, with
exception messages, tracebacks, captured stdout and logs), and pytest writes the JUnit
XML. So at the end of the run, once every worker has finished and before any artefact is
hashed, every file of the run directory passes through the run's redactor here.

A redactor replaces a secret's exact text. A file may hold it in an escaped form that
the exact text does not match (JSON ``\\"`` and ``\\u00e9``, XML ``&amp;``), so
structured files are redacted on their decoded strings:

* ``*.json``: every string of the document (keys too) is redacted, and a string that is
  itself a JSON document (evidence carried as text) is walked in turn; the file is
  re-serialised only when something changed.
* ``*.xml``: every text, tail and attribute of the parsed tree, likewise.
* anything else: its bytes read as UTF-8, undecodable bytes kept as they are
  (``surrogateescape``), so a secret's UTF-8 bytes are replaced even inside a binary
  file. A format that compresses or encodes its content (PNG, gzip, base64) can still
  hide a secret: opsgate writes none, and docs/reports.md says so.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

Redact = Callable[[str], str]


def redact_string(text: str, redact: Redact) -> str:
    """``text`` redacted; a string that holds a JSON document is redacted inside too."""
    clean = redact(text)
    stripped = clean.strip()
    if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
        try:
            inner = json.loads(stripped)
        except ValueError:
            return clean
        walked = redact_data(inner, redact)
        if walked != inner:
            return json.dumps(walked, ensure_ascii=False, sort_keys=True)
    return clean


def redact_data(value: Any, redact: Redact) -> Any:
    """A copy of a JSON-like value with every string (dictionary keys too) redacted."""
    if isinstance(value, str):
        return redact_string(value, redact)
    if isinstance(value, dict):
        return {redact_string(str(k), redact): redact_data(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v, redact) for v in value]
    return value


def _redact_json(path: Path, raw: bytes, redact: Redact) -> bool:
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _redact_bytes(path, raw, redact)
    clean = redact_data(document, redact)
    if clean == document:
        return False
    indent = 2 if raw.lstrip()[:1] in (b"{", b"[") and b"\n" in raw.strip() else None
    text = json.dumps(clean, ensure_ascii=False, indent=indent)
    path.write_bytes(text.encode("utf-8") + (b"\n" if raw.endswith(b"\n") else b""))
    return True


def _redact_xml(path: Path, raw: bytes, redact: Redact) -> bool:
    try:
        tree = ET.ElementTree(ET.fromstring(raw))
    except ET.ParseError:
        return _redact_bytes(path, raw, redact)
    changed = False
    for el in tree.iter():
        for name in ("text", "tail"):
            value = getattr(el, name)
            if value:
                clean = redact_string(value, redact)
                if clean != value:
                    setattr(el, name, clean)
                    changed = True
        for key, value in list(el.attrib.items()):
            clean = redact_string(value, redact)
            if clean != value:
                el.attrib[key] = clean
                changed = True
    if changed:
        tree.write(path, encoding="utf-8", xml_declaration=True)
    return changed


def _redact_bytes(path: Path, raw: bytes, redact: Redact) -> bool:
    text = raw.decode("utf-8", errors="surrogateescape")
    clean = redact(text)
    if clean == text:
        return False
    path.write_bytes(clean.encode("utf-8", errors="surrogateescape"))
    return True


def redact_file(path: Path, redact: Redact) -> bool:
    """Redact one file in place; True when it changed."""
    raw = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _redact_json(path, raw, redact)
    if suffix == ".xml":
        return _redact_xml(path, raw, redact)
    return _redact_bytes(path, raw, redact)


def redact_tree(root: Path, redact: Redact) -> list[Path]:
    """Redact every regular file under ``root``; returns the files that changed."""
    changed = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and redact_file(path, redact):
            changed.append(path)
    return changed
