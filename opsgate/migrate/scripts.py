"""Discovering, naming, checksumming and loading migration scripts."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import ModuleType

from opsgate.errors import ScriptError, first_line

NAME_RE = re.compile(
    r"^(?P<date>\d{8})_(?P<project>\d+)_(?P<source>[a-z0-9]+)_to_(?P<target>[a-z0-9]+)"
    r"_(?P<purpose>[a-z0-9]+(?:_[a-z0-9]+)*)$"
)
REQUIRED = ("SOURCE", "TARGET", "DESCRIPTION", "TARGET_TABLES", "preconditions", "plan",
            "apply", "verify")


def script_checksum(path: Path) -> str:
    """SHA-256 of the script with line endings normalised to LF (CRLF == LF)."""
    data = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class MigrationScript:
    name: str
    path: Path
    source: str
    target: str
    number: str

    @functools.cached_property
    def checksum(self) -> str:
        """Read once per process: status and the ledger check compare and report it."""
        return script_checksum(self.path)

    def load(self) -> ModuleType:
        """The script as a module, checked for what the runner calls: a script that
        cannot be imported or lacks a part raises `ScriptError` naming the file."""
        spec = importlib.util.spec_from_file_location(f"opsgate_migration_{self.name}", self.path)
        if spec is None or spec.loader is None:
            raise ScriptError(f"{self.path.name}: cannot be loaded")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            # A script that fails to import is a bad script (a usage error), said in
            # one line, so the runner still prints its summary rather than a traceback.
            raise ScriptError(f"{self.path.name} cannot be imported: "
                              f"{exc.__class__.__name__}: {first_line(exc)}") from None
        lacking = [a for a in REQUIRED if not hasattr(module, a)]
        if lacking:
            raise ScriptError(f"{self.path.name}: missing {', '.join(lacking)}")
        if (self.source, self.target) != (module.SOURCE, module.TARGET):
            raise ScriptError(
                f"{self.path.name}: declares {module.SOURCE} -> {module.TARGET} but is named "
                f"{self.source} -> {self.target}"
            )
        return module


def parse_name(stem: str) -> re.Match[str]:
    m = NAME_RE.match(stem)
    if not m:
        raise ScriptError(
            f"{stem}.py: not named YYYYMMDD_<project>_<source>_to_<target>_<purpose>.py "
            "(lowercase letters, digits and underscores)"
        )
    try:
        date(int(m["date"][:4]), int(m["date"][4:6]), int(m["date"][6:]))
    except ValueError:
        raise ScriptError(f"{stem}.py: {m['date']} is not a date") from None
    return m


def discover_scripts(directory: str | Path) -> list[MigrationScript]:
    """Every script in ``directory`` in name order; refuses bad names and duplicates."""
    root = Path(directory)
    if not root.is_dir():
        raise ScriptError(f"migrations folder {root} does not exist")
    scripts: list[MigrationScript] = []
    numbers: dict[str, str] = {}
    for path in sorted(root.glob("*.py")):
        if path.name.startswith("_"):
            continue
        m = parse_name(path.stem)
        number = f"{m['date']}_{m['project']}"
        if number in numbers:
            raise ScriptError(
                f"{path.name}: number {number} is already used by {numbers[number]}.py"
            )
        numbers[number] = path.stem
        scripts.append(MigrationScript(path.stem, path, m["source"], m["target"], number))
    return scripts


def find_script(directory: str | Path, name: str) -> MigrationScript:
    name = name.removesuffix(".py")
    scripts = discover_scripts(directory)
    for s in scripts:
        if s.name == name:
            return s
    known = ", ".join(s.name for s in scripts) or "none"
    raise ScriptError(f"no migration named {name!r} (known: {known})")
