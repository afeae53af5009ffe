"""reports/redaction.py on each kind of file a run directory holds: a secret is found in
the form each format writes it (JSON and XML escapes, JSON inside a JSON string, raw
bytes inside a binary file), and a file without one is left byte for byte."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from opsgate.reports.redaction import redact_data, redact_file, redact_tree
from opsgate.sensitive import Redactor

SECRET = 'pw"<&é\\-canary-5e6f'
redact = Redactor([SECRET, "tok-canary-77aa"])


def test_json_is_redacted_on_its_decoded_strings(tmp_path: Path) -> None:
    doc = {"message": f"login failed with {SECRET}", SECRET: [1, {"k": SECRET}],
           "evidence": json.dumps({"dsn": SECRET}), "n": 3}
    for ensure_ascii, indent in ((True, None), (False, 2)):
        path = tmp_path / "x-result.json"
        raw = json.dumps(doc, ensure_ascii=ensure_ascii, indent=indent)
        assert SECRET not in raw  # only its escaped form is in the file
        path.write_text(raw)
        assert redact_file(path, redact)
        text = path.read_text()
        assert "canary-5e6f" not in text
        clean = json.loads(text)
        assert clean["message"] == "login failed with ***" and clean["n"] == 3
        assert clean["***"] == [1, {"k": "***"}]
        assert json.loads(clean["evidence"]) == {"dsn": "***"}


def test_xml_is_redacted_on_text_and_attributes(tmp_path: Path) -> None:
    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite", {"name": "pytest"})
    case = ET.SubElement(suite, "testcase", {"name": "t"})
    failure = ET.SubElement(case, "failure", {"message": f"bad {SECRET}"})
    failure.text = f"trace with {SECRET}"
    prop = ET.SubElement(ET.SubElement(case, "properties"), "property",
                         {"name": "opsgate_evidence", "value": json.dumps({"pw": SECRET})})
    assert prop is not None
    path = tmp_path / "junit.xml"
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    assert "&amp;" in path.read_text()
    assert redact_file(path, redact)
    assert "canary-5e6f" not in path.read_text()
    clean = ET.parse(path).getroot()
    assert clean.find(".//failure").get("message") == "bad ***"  # type: ignore[union-attr]


def test_text_and_binary_files_lose_the_secret_bytes_and_keep_the_rest(tmp_path: Path) -> None:
    text = tmp_path / "a-attachment.txt"
    text.write_text(f"stdout: {SECRET}\n")
    binary = tmp_path / "b-attachment.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + SECRET.encode() + b"\x00\x80tail")
    assert redact_file(text, redact) and text.read_text() == "stdout: ***\n"
    assert redact_file(binary, redact)
    assert binary.read_bytes() == b"\x89PNG\r\n\x1a\n\xff\xfe***\x00\x80tail"


def test_files_without_a_secret_are_not_rewritten(tmp_path: Path) -> None:
    files = {"r.json": '{"a":  "b"}', "j.xml": "<a  b='c'/>", "t.txt": "plain",
             "bin.dat": "\x00\x01"}
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.json").write_text(json.dumps({"m": SECRET}))
    assert redact_tree(tmp_path, redact) == [tmp_path / "sub" / "x.json"]
    for name, body in files.items():
        assert (tmp_path / name).read_text() == body


def test_redact_data_walks_keys_lists_and_nested_json() -> None:
    value = {"a": ["tok-canary-77aa", {"tok-canary-77aa": None}], "b": 1.5,
             "c": '["tok-canary-77aa"]'}
    assert redact_data(value, redact) == {"a": ["***", {"***": None}], "b": 1.5,
                                          "c": '["***"]'}
