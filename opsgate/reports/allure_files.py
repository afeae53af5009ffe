"""What makes ``allure-results/`` a report as teams use it: a title, failure categories,
history and trend carried from the previous run, and no pytest plumbing in the steps.

* ``executor.json`` (Allure 2's report title, ``reportName``, and the CI build link) and
  ``allurerc.json`` beside the results (Allure 3's ``name``, its ``output`` and a
  ``historyPath`` shared by every run of the reports folder);
* ``categories.json``: failure kinds matched on the result's message (Allure 2 reads it
  from the results; Allure 3 reads ``categories`` from its config, which
  ``allurerc.json`` carries too);
* Allure 2 keeps its trend in the generated report's ``history/`` folder and reads it
  back from the next results' ``history/``: the previous run's, when its report was
  generated, is copied in (its documented mechanism);
* allure-pytest records every fixture's setup and every finalizer (``target_db``,
  ``evidence::<lambda>``, ``_allure_labels``) as set-up/tear-down steps of the test, and
  has no option to leave them out; they say nothing to a reader of the report, so the
  containers are pruned after the run: a fixture stays only when it failed or carries
  steps (``connect: read-only session to ...``), under the name of its single step.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Failure kinds, first match wins: (name, pattern searched in the result's message).
#: The patterns use only syntax Java (Allure 2) and JavaScript (Allure 3) share.
KINDS: list[tuple[str, str]] = [
    ("Interrupted", r"^interrupted by "),  # `allure_results.mark_interrupted`'s message
    ("Missing variable", r"\bmissing [A-Z][A-Z0-9_]+(, [A-Z][A-Z0-9_]+)*: required by"),
    ("Target unreachable", r"cannot connect|did not answer|not tried again|timed out|"
                           r"password authentication failed|Connection refused|"
                           r"refused (ADMIN_PASSWORD|BLOB_READ_WRITE_TOKEN)"),
    ("Safeguard refused", r"refus|safeguard|not empty|will not|read-only"),
    ("Schema or contract", r"does not exist|missing column|missing table|contract|schema|"
                           r"production markers missing"),
    ("Migration ledger", r"ledger|migration|checksum"),
    ("Data drift", r"drift|differ|!=| vs |mismatch|emptied|shrank|changed|dangling|"
                   r"not in|hash"),
]
STATUSES = ["failed", "broken"]
#: Allure 2's categories.json: ``messageRegex`` must match the whole message (Java's
#: ``matches``), hence the DOTALL flag and ``.*`` around each pattern.
CATEGORIES: list[dict[str, Any]] = [
    {"name": name, "messageRegex": f"(?s).*({pattern}).*", "matchedStatuses": STATUSES}
    for name, pattern in KINDS]

HISTORY_FILE = "allure-history.jsonl"  # Allure 3's, at the reports folder's top
CONFIG = "allurerc.json"


def title(target: str) -> str:
    return f"opsgate release gate: {target}"


def _build_url() -> str | None:
    """The GitHub Actions run this is, when it is one (public facts, not secrets)."""
    server, repo, run = (os.environ.get(k) for k in (
        "GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else None


def write(results: Path, run_dir: Path, reports_root: Path, target: str,
          run_id: str) -> None:
    """executor.json and categories.json into ``results``; allurerc.json into the run."""
    executor: dict[str, Any] = {"name": "opsgate", "type": "opsgate",
                                "reportName": title(target), "buildName": run_id}
    url = _build_url()
    if url:
        executor["buildUrl"] = url
    (results / "executor.json").write_text(json.dumps(executor, indent=2) + "\n",
                                           encoding="utf-8")
    (results / "categories.json").write_text(json.dumps(CATEGORIES, indent=2) + "\n",
                                             encoding="utf-8")
    history = os.path.relpath(reports_root / HISTORY_FILE, run_dir)
    config = {"name": title(target), "output": "allure-report", "historyPath": history,
              # Allure 3 searches the message (JavaScript ``RegExp.test``).
              "categories": {"rules": [
                  {"name": name, "matchers": {"statuses": STATUSES, "message": pattern}}
                  for name, pattern in KINDS]}}
    (run_dir / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def carry_history(previous_run: Path | None, results: Path) -> int:
    """Copy the previous run's generated Allure 2 ``history/`` into ``results``; the
    number of files copied (0 when that run's report was never generated)."""
    if previous_run is None:
        return 0
    source = previous_run / "allure-report" / "history"
    if not source.is_dir():
        return 0
    target = results / "history"
    target.mkdir(exist_ok=True)
    n = 0
    for f in sorted(source.iterdir()):
        if f.is_file() and f.suffix == ".json":
            shutil.copyfile(f, target / f.name)
            n += 1
    return n


def _keep(fixture: dict[str, Any]) -> dict[str, Any] | None:
    """The fixture record a reader should see, or None to drop it."""
    steps = fixture.get("steps") or []
    if fixture.get("status") in ("failed", "broken"):
        return fixture
    if not steps and not fixture.get("attachments"):
        return None
    if len(steps) == 1:  # the fixture's one step says what it did: lift it
        return {**fixture, "name": steps[0].get("name", fixture.get("name")),
                "steps": steps[0].get("steps", [])}
    return {**fixture, "name": "set up"}


def json_objects(results: Path, pattern: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The files of ``results`` matching ``pattern`` that hold a JSON object, with it;
    others are skipped (allure-pytest's files, not opsgate's to judge)."""
    for path in sorted(results.glob(pattern)):
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(found, dict):
            yield path, found


def prune_fixtures(results: Path) -> int:
    """Drop internal fixtures from every ``*-container.json``; containers left with
    nothing are deleted. Returns the number of fixture records dropped."""
    dropped = 0
    for path, container in json_objects(results, "*-container.json"):
        for key in ("befores", "afters"):
            kept = [k for k in (_keep(f) for f in container.get(key) or []
                                if isinstance(f, dict)) if k is not None]
            dropped += len(container.get(key) or []) - len(kept)
            container[key] = kept
        if not container["befores"] and not container["afters"]:
            path.unlink()
        else:
            path.write_text(json.dumps(container), encoding="utf-8")
    return dropped
