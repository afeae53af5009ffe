"""One redaction for every artefact: canary secrets put into a FAILING gate run's failure
messages, exceptions, setup errors, prints, logs, evidence and Allure attachments (text
and binary) appear nowhere, in no form: not in any file under the reports folder
(Allure's results and attachments, written by allure-pytest on the workers, included),
not in the history, not on stdout or stderr.

The canaries are scanned by an ASCII core that JSON, XML and HTML escaping leave intact,
so a secret that survived in an escaped form (``\\"``, ``\\u00e9``, ``&amp;``) is found
too. The admin password carries characters each format escapes.
"""

from __future__ import annotations

import json

import pytest

from tests.gate_helpers import gate_project

#: variable -> value; CORES below are what is searched for.
CANARY_ENV = {
    # a password with characters JSON, XML and HTML each escape
    "ADMIN_PASSWORD": 'pw"<&é-canary-a71c',
    "BLOB_READ_WRITE_TOKEN": "vercel_blob_rw_canary-token-b82d",  # a token
    "DATABASE_URL": "postgresql://app:canary-urlpw-c93e@127.0.0.1:9/prod",  # a URL password
    # libpq keyword/value conninfo (DATABASE_URL_UNPOOLED as some platforms write it)
    "DATABASE_URL_UNPOOLED": "host=127.0.0.1 port=9 dbname=prod user=app "
                             "password=canary-kwpw-d04f",
    "DRILL_DATABASE_URL": "postgresql://drill:Q7z@127.0.0.1:9/drill",  # a 3-character secret
    "OPS_BASE_URL": "http://127.0.0.1:9",
}

CORES = {
    "password": "canary-a71c",
    "token": "canary-token-b82d",
    "URL password": "canary-urlpw-c93e",
    "keyword conninfo password": "canary-kwpw-d04f",
    "3-character secret": "Q7z",
}

LEAKY_CHECKS = r'''
import logging
import os
import sys
from urllib.parse import urlsplit

import allure
import pytest

URL = os.environ["DATABASE_URL"]
CONNINFO = os.environ["DATABASE_URL_UNPOOLED"]
SECRETS = {
    "admin": os.environ["ADMIN_PASSWORD"],
    "token": os.environ["BLOB_READ_WRITE_TOKEN"],
    "url": URL,
    "url_password": urlsplit(URL).password,
    "conninfo": CONNINFO,
    "conninfo_password": CONNINFO.split("password=", 1)[1],
    "short": urlsplit(os.environ["DRILL_DATABASE_URL"]).password,
}
ALL = " | ".join(SECRETS.values())


class Canaries:
    """Evidence of any shape (a check's is a dataclass; these are secrets to redact)."""

    def __init__(self, found):
        self.found = found

    def as_json(self):
        return self.found


@pytest.fixture
def broken_connection():
    raise ConnectionError(f"setup could not connect: {URL} {SECRETS['short']}")


@pytest.mark.preflight
def test_assert_message_prints_logs_and_evidence(evidence):
    evidence.set(Canaries({**SECRETS, "nested": {"values": list(SECRETS.values()),
                                                 SECRETS["token"]: "as a key"}}))
    print("print:", ALL)
    print("stderr:", ALL, file=sys.stderr)
    logging.getLogger("canary").error("log: %s", ALL)
    allure.attach("attached text: " + ALL, name="raw text",
                  attachment_type=allure.attachment_type.TEXT)
    allure.attach(b"\x89PNG\r\n\x1a\n\x00\xff" + ALL.encode() + b"\x00\xfe", name="binary",
                  attachment_type=allure.attachment_type.PNG)
    allure.attach('{"dsn": "%s"}' % SECRETS["admin"].replace('"', '\\"'), name="json",
                  attachment_type=allure.attachment_type.JSON)
    assert SECRETS["admin"] == "something else", "login failed: " + ALL


@pytest.mark.parity
def test_exception_names_the_connection(evidence):
    evidence.set(Canaries({"dsn": CONNINFO}))
    with allure.step("connect to " + CONNINFO):
        raise RuntimeError(f"connection failed: {CONNINFO} (password "
                           f"{SECRETS['conninfo_password']}, short {SECRETS['short']})")


@pytest.mark.ledger
def test_setup_error(broken_connection):
    pass
'''


@pytest.fixture
def gate(pytester: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> pytest.Pytester:
    gate_project(pytester, LEAKY_CHECKS)
    for k, v in CANARY_ENV.items():
        clean_env.setenv(k, v)
    clean_env.setenv("GITHUB_STEP_SUMMARY", str(pytester.path / "reports" / "step-summary.md"))
    return pytester


@pytest.mark.parametrize("extra", [["-rA"], ["-n", "2", "-rA"]], ids=["one-process", "xdist"])
def test_no_canary_in_any_artefact_or_output_of_a_failing_run(
        gate: pytest.Pytester, extra: list[str]) -> None:
    result = gate.runpytest_subprocess(*extra)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    reports = gate.path / "reports"
    (run_dir,) = (reports / "runs").iterdir()
    files = [p for p in reports.rglob("*") if p.is_file()]
    results = list((run_dir / "allure-results").glob("*-result.json"))
    attachments = list((run_dir / "allure-results").glob("*-attachment*"))
    assert len(results) == 3 and len(attachments) >= 6  # the evidence, text, binary, json, ...
    assert (reports / "history.jsonl").is_file() and (reports / "step-summary.md").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["notes"] == []  # valid against its schema, masked conninfo included
    assert summary["target"]["database_direct"].endswith("password=***")

    texts = {"stdout": result.stdout.str(), "stderr": result.stderr.str()}
    texts.update({str(p.relative_to(reports)): p.read_bytes().decode("utf-8", "replace")
                  for p in files})
    assert "login failed: ***" in texts["stdout"]  # the message is still there, masked
    leaks = [f"{what} in {where}" for what, core in CORES.items()
             for where, text in texts.items() if core in text]
    assert not leaks, "canary leaked:\n" + "\n".join(leaks)
