"""What a history line vouches for: the SHA-256 of every artefact of its run.

A run directory is sealed once, at the end of the run, after every file in it has been
written and redacted:

* every file outside ``allure-results/`` (summary.json, junit.xml, drill-record.md,
  report.html) and ``allure-results/environment.properties`` is listed by name with
  its SHA-256 in the history line (``artefacts``);
* every file under ``allure-results/`` (environment.properties included) is listed in
  ``allure-results.sha256``, in ``sha256sum`` format with paths relative to the run
  directory (``cd <run> && sha256sum -c allure-results.sha256`` checks it by hand), and
  that manifest is itself one of the listed artefacts.

So any file of the run deleted, added or edited afterwards is detected by
``opsgate reports verify``, naming the run and the file.

junit.xml carries the history head (``opsgate_history_head``, the SHA-256 of the line
that lists the run). A file cannot contain the hash of a line that contains its own
hash, so junit.xml is hashed with that value written as 64 zeros; ``verify`` puts the
zeros back before hashing and checks the value equals the line's hash.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HEAD_PROPERTY = "opsgate_history_head"
PLACEHOLDER = "0" * 64
ALLURE_DIR = "allure-results"
MANIFEST = "allure-results.sha256"
#: Made from the results after the run (docs/reports.md), so not an artefact of it.
DERIVED = ("allure-report",)

_HEAD_RE = re.compile(
    rb'(name="' + HEAD_PROPERTY.encode() + rb'"\s+value=")([0-9a-f]{64})(")')


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- junit.xml -------------------------------------------------------------------------


def junit_add_head_placeholder(path: Path, suite_name: str | None = None,
                               properties: dict[str, str] | None = None) -> None:
    """Give every ``<testsuite>`` of the JUnit XML at ``path`` an ``opsgate_history_head``
    property holding 64 zeros (replaced by the head once the history line exists), the
    run's other ``properties`` (target, marker expression), and ``suite_name`` for
    pytest's "pytest" (what CI test tabs list the run under).

    Why rewrite the file pytest wrote: ``record_testsuite_property`` is a session-scoped
    fixture, usable only while tests run, and pytest's ``LogXML`` (its
    ``add_global_property``) is reachable only through a private stash key and would
    need the value before the XML is written, while the head can only be known after
    every artefact, junit.xml included, is hashed. Editing the written file depends on
    nothing but the JUnit format, and works the same under xdist (only the controller
    writes it).
    """
    tree = ET.parse(path)
    root = tree.getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    ours = {**(properties or {}), HEAD_PROPERTY: PLACEHOLDER}
    if suite_name and root.tag == "testsuites":
        root.set("name", suite_name)
    for suite in suites:
        if suite_name:
            suite.set("name", suite_name)
        props = suite.find("properties")
        if props is None:
            props = ET.Element("properties")
            suite.insert(0, props)
        for old in [p for p in props.findall("property") if p.get("name") in ours]:
            props.remove(old)
        for name, value in ours.items():
            ET.SubElement(props, "property", {"name": name, "value": value})
    tree.write(path, encoding="utf-8", xml_declaration=True)


def junit_set_head(path: Path, head: str) -> None:
    """Write ``head`` where the placeholder is (same length: nothing else moves)."""
    data = path.read_bytes()
    path.write_bytes(_HEAD_RE.sub(lambda m: m.group(1) + head.encode() + m.group(3), data))


def junit_heads(data: bytes) -> list[str]:
    return [m.group(2).decode() for m in _HEAD_RE.finditer(data)]


def junit_canonical(data: bytes) -> bytes:
    """The bytes that were hashed: every head value back to 64 zeros."""
    return _HEAD_RE.sub(lambda m: m.group(1) + PLACEHOLDER.encode() + m.group(3), data)


# -- a run directory -------------------------------------------------------------------


def _files(run_dir: Path) -> list[str]:
    """Every regular file of the run, as a POSIX path relative to it, sorted."""
    out = []
    for path in run_dir.rglob("*"):
        if not (path.is_file() or path.is_symlink()):
            continue
        rel = path.relative_to(run_dir).as_posix()
        if rel.split("/", 1)[0] in DERIVED:
            continue
        out.append(rel)
    return sorted(out)


def _hash_artefact(run_dir: Path, rel: str) -> str:
    path = run_dir / rel
    if rel == "junit.xml":
        return sha256_bytes(junit_canonical(path.read_bytes()))
    return sha256_file(path)


def manifest_text(run_dir: Path) -> str:
    lines = [f"{sha256_file(run_dir / rel)}  {rel}\n" for rel in _files(run_dir)
             if rel.startswith(ALLURE_DIR + "/")]
    return "".join(lines)


def seal(run_dir: Path) -> dict[str, Any]:
    """Write the allure manifest and return what the history line lists."""
    manifest = manifest_text(run_dir)
    (run_dir / MANIFEST).write_text(manifest, encoding="utf-8")
    artefacts = {}
    for rel in _files(run_dir):
        if not rel.startswith(ALLURE_DIR + "/") or rel == f"{ALLURE_DIR}/environment.properties":
            artefacts[rel] = _hash_artefact(run_dir, rel)
    return {"artefacts": artefacts, "allure_files": manifest.count("\n")}


def _parse_manifest(text: str) -> tuple[dict[str, str], list[str]]:
    listed: dict[str, str] = {}
    bad = []
    for i, line in enumerate(text.splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest) or not rel:
            bad.append(f"line {i}")
            continue
        listed[rel] = digest
    return listed, bad


def check(run_dir: Path, entry: dict[str, Any], line_hash: str) -> list[str]:
    """What changed in a run since its history line was written: one phrase per file
    ("summary.json missing", "report.html changed after the run", ...). Empty: intact."""
    artefacts = entry.get("artefacts")
    if not isinstance(artefacts, dict):
        return _check_legacy(run_dir, entry)
    if not run_dir.is_dir():
        return [f"run directory {run_dir.name} missing (listed: "
                f"{', '.join(sorted(artefacts))} and {entry.get('allure_files', '?')} "
                "allure results)"]
    problems: list[str] = []
    present = set(_files(run_dir))
    for rel, digest in sorted(artefacts.items()):
        if rel not in present:
            problems.append(f"{rel} missing")
            continue
        if rel == "junit.xml":
            heads = junit_heads((run_dir / rel).read_bytes())
            if heads and any(h != line_hash for h in heads):
                problems.append(f"junit.xml {HEAD_PROPERTY} is {heads[0]}, not this line's "
                                f"hash {line_hash}")
        if _hash_artefact(run_dir, rel) != digest:
            problems.append(f"{rel} changed after the run")
    listed: dict[str, str] = {}
    if MANIFEST in artefacts and MANIFEST in present:
        listed, bad = _parse_manifest((run_dir / MANIFEST).read_text(errors="replace"))
        problems += [f"{MANIFEST} unreadable at {b}" for b in bad]
        for rel, digest in sorted(listed.items()):
            if rel not in present:
                problems.append(f"{rel} missing")
            elif sha256_file(run_dir / rel) != digest:
                problems.append(f"{rel} changed after the run")
    elif MANIFEST in artefacts:
        # Reported missing above; what is under allure-results/ cannot be told apart.
        listed = {rel: "" for rel in present if rel.startswith(ALLURE_DIR + "/")}
        problems.append(f"{len(listed)} file(s) under {ALLURE_DIR}/ unverifiable without "
                        f"{MANIFEST} (the run listed {entry.get('allure_files', '?')})")
    problems += [f"{rel} added after the run" for rel in _unlisted(present, artefacts, listed)]
    return problems


def _unlisted(present: Iterable[str], artefacts: dict[str, Any],
              listed: dict[str, str]) -> list[str]:
    return sorted(rel for rel in present if rel not in artefacts and rel not in listed
                  and rel != MANIFEST)


def _check_legacy(run_dir: Path, entry: dict[str, Any]) -> list[str]:
    """A line written before artefact hashes: only summary.json was listed."""
    digest = entry.get("summary_sha256")
    if not isinstance(digest, str):
        return ["the line lists no artefact"]
    summary = run_dir / "summary.json"
    if not summary.is_file():
        return ["summary.json missing"]
    if sha256_file(summary) != digest:
        return ["summary.json changed after the run"]
    return []
