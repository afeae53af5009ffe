"""Interrupted tests in the JUnit XML pytest wrote.

pytest's junitxml writes a ``<testcase>`` for every test that reported at all: one whose
setup passed and whose call was cut short by a signal gets an empty ``<testcase>``, which
every CI test tab reads as a pass, and a selected test that never started gets none.
Here each of them becomes a named testcase with an ``<error type="interrupted">`` saying
what stopped it, so JUnit says what summary.json says."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from opsgate.reports.model import INTERRUPTED, RunRecord

__all__ = ["mark_interrupted"]


def _address(nodeid: str) -> tuple[str, str]:
    """(classname, name) as pytest's junitxml derives them (``mangle_test_address``)."""
    path, *rest = nodeid.split("::")
    names = [path.replace("/", ".").removesuffix(".py"), *rest]
    names = [n.replace(".[", "[") for n in names]
    return ".".join(names[:-1]), names[-1]


def mark_interrupted(path: Path, record: RunRecord) -> None:
    """Give every test the record holds as interrupted an error element in ``path``."""
    unfinished = {_address(t.nodeid): t for t in record.tests.values()
                  if t.outcome == INTERRUPTED}
    if not unfinished:
        return
    tree = ET.parse(path)
    root = tree.getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    if not suites:
        return
    seen: set[tuple[str, str]] = set()
    for suite in suites:
        for case in suite.iter("testcase"):
            key = (case.get("classname", ""), case.get("name", ""))
            test = unfinished.get(key)
            if test is None or key in seen:
                continue
            seen.add(key)
            for old in [c for c in case if c.tag in ("failure", "error", "skipped")]:
                case.remove(old)
            ET.SubElement(case, "error", {"type": INTERRUPTED, "message": test.message})
    for key, test in unfinished.items():
        if key not in seen:
            case = ET.SubElement(suites[0], "testcase",
                                 {"classname": key[0], "name": key[1], "time": "0.000"})
            ET.SubElement(case, "error", {"type": INTERRUPTED, "message": test.message})
    for suite in suites:  # the suite's counts as its testcases now say
        cases = list(suite.iter("testcase"))
        suite.set("tests", str(len(cases)))
        for attr, tag in (("errors", "error"), ("failures", "failure"), ("skipped", "skipped")):
            suite.set(attr, str(sum(1 for c in cases if c.find(tag) is not None)))
    tree.write(path, encoding="utf-8", xml_declaration=True)
