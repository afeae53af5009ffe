"""Interrupted tests in the Allure results allure-pytest wrote.

allure-pytest writes a test's result when the test's protocol ends, from the reports it
saw: a test whose call a signal cut short is written ``passed`` (no failure reached it)
with no steps, one stopped in its set-up ``skipped``, and a selected test that never
started has no result at all. Here each becomes ``broken``, with what stopped it as its
message, and a test that never started gets a result of its own: Allure then says what
summary.json and the JUnit XML (`opsgate.reports.junit`) say."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

from opsgate.reports.allure_files import json_objects
from opsgate.reports.model import INTERRUPTED, RunRecord, TestOutcome

__all__ = ["mark_interrupted"]

STATUS = "broken"


def _key(nodeid: str) -> tuple[str, str]:
    """(``fullName``, ``name``) as allure-pytest derives them from a test's node id
    (``allure_full_name``; ``name`` is the item's name, as no check has an Allure
    title): ``checks/test_drill.py::test_x[p]`` -> ``checks.test_drill#test_x``,
    ``test_x[p]``."""
    path, *rest = nodeid.split("::")
    package = path.rsplit(".", 1)[0].replace("/", ".")
    *classes, name = rest or [""]
    owner = f".{classes[-1]}" if classes else ""
    return f"{package}{owner}#{name.split('[', 1)[0]}", name


def _never_started(test: TestOutcome, full_name: str, name: str) -> dict[str, Any]:
    """A result for a selected test the run never began, labelled as allure-pytest
    labels the others so it sits in the same suite."""
    now = int(time.time() * 1000)
    package = full_name.split("#", 1)[0]
    digest = hashlib.md5(test.nodeid.encode(), usedforsecurity=False).hexdigest()
    labels = [{"name": "package", "value": package},
              {"name": "parentSuite", "value": package.rsplit(".", 1)[0]},
              {"name": "suite", "value": package.rsplit(".", 1)[-1]},
              {"name": "framework", "value": "pytest"}]
    if test.marker:
        labels.append({"name": "check", "value": test.marker})
    return {"uuid": str(uuid.uuid4()), "name": name, "fullName": full_name,
            "historyId": digest, "testCaseId": digest, "status": STATUS,
            "statusDetails": {"message": test.message}, "stage": "finished",
            "start": now, "stop": now, "labels": labels}


def mark_interrupted(results: Path, record: RunRecord) -> int:
    """Every test the record holds as interrupted, ``broken`` in ``results``; returns
    how many results were changed or added."""
    unfinished = {_key(t.nodeid): t for t in record.tests.values()
                  if t.outcome == INTERRUPTED}
    if not unfinished or not results.is_dir():
        return 0
    seen: set[tuple[str, str]] = set()
    for path, doc in json_objects(results, "*-result.json"):
        key = (str(doc.get("fullName")), str(doc.get("name")))
        test = unfinished.get(key)
        if test is None:
            continue
        seen.add(key)
        doc["status"] = STATUS
        doc["statusDetails"] = {"message": test.message}
        path.write_text(json.dumps(doc), encoding="utf-8")
    for key, test in unfinished.items():
        if key not in seen:
            doc = _never_started(test, *key)
            (results / f"{doc['uuid']}-result.json").write_text(json.dumps(doc),
                                                                encoding="utf-8")
    return len(unfinished)
