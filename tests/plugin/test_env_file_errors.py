"""A line of an env file that the app would misread or skip stops opsgate before
anything runs: one line naming the file, the line number and the key, never the value;
pytest exits 4 (usage error), `opsgate migrate` and `opsgate refresh` exit 2, and
nothing is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from opsgate.config import Settings
from opsgate.errors import ConfigError
from tests.gate_helpers import ROOT, clean_env, gate_project

CANARY = "canary-9f3e"

#: (file contents, line of the error, key the message names or None); every value
#: holds CANARY, which must never show.
CASES: dict[str, tuple[str | bytes, int, str | None]] = {
    "unterminated double quote": (
        '# Created by Vercel CLI\nDATABASE_URL="postgres://u@h/db"\n'
        f'ADMIN_STORAGE_BACKEND="neon{CANARY}\nOPS_BASE_URL="https://x"\n', 3,
        "ADMIN_STORAGE_BACKEND"),
    "unterminated single quote": (f"A=1\nADMIN_PASSWORD='{CANARY}\n", 2, "ADMIN_PASSWORD"),
    "unterminated backtick": (f"ADMIN_PASSWORD=`{CANARY}\n", 1, "ADMIN_PASSWORD"),
    "a quote closed before the value ends": (f'ADMIN_PASSWORD="{CANARY}" x\n', 1,
                                             "ADMIN_PASSWORD"),
    "no = sign": (f"# a comment\n\nADMIN_PASSWORD {CANARY}\n", 3, None),
    "a colon with no space": (f"ADMIN_PASSWORD:{CANARY}\n", 1, None),
    "a bare word": (f"A=1\n{CANARY}\n", 2, None),
    "a stray quote line": (f'A=1\n"{CANARY}\n', 2, None),
    "the value on the next line": (f'ADMIN_PASSWORD=\n"{CANARY}"\n', 1, "ADMIN_PASSWORD"),
    "a colon's value on the next line": (f"ADMIN_PASSWORD:\n{CANARY}\n", 1,
                                         "ADMIN_PASSWORD"),
    "= on the next line": (f"ADMIN_PASSWORD\n={CANARY}\n", 1, "ADMIN_PASSWORD"),
    "export alone on its line": (f"export\nADMIN_PASSWORD={CANARY}\n", 1, "ADMIN_PASSWORD"),
    "__proto__": (f"__proto__={CANARY}\n", 1, "__proto__"),
    "a reference to itself": (f"A=1\nADMIN_PASSWORD={CANARY}$ADMIN_PASSWORD\n", 2,
                              "ADMIN_PASSWORD"),
    "a reference that grows without end": (
        f"ADMIN_PASSWORD={CANARY}-$ADMIN_PASSWORD-$ADMIN_PASSWORD\n", 1, "ADMIN_PASSWORD"),
    "a cycle of references": (f"ADMIN_PASSWORD={CANARY}$B\nB=$ADMIN_PASSWORD\n", 1,
                              "ADMIN_PASSWORD"),
    "a name JavaScript resolves to a function": (f"ADMIN_PASSWORD={CANARY}$toString\n", 1,
                                                 "ADMIN_PASSWORD"),
    "bytes that are not UTF-8": (f"A=1\nADMIN_PASSWORD={CANARY}".encode() + b"\xff\n", 2,
                                 None),
    "CRLF line endings": (f"A=1\r\nB=2\r\n{CANARY}\r\n", 3, None),
}


def write(folder: Path, contents: str | bytes) -> Path:
    path = folder / ".env.production.local"
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        path.write_text(contents, encoding="utf-8", newline="")
    return path


def assert_names_the_line(message: str, path: Path, line: int, key: str | None) -> None:
    assert f"{path}: line {line}" in message, message
    if key is not None:
        assert key in message, message
    assert CANARY not in message
    assert "\n" not in message.strip()


@pytest.mark.parametrize("case", list(CASES))
def test_settings_refuse_the_line(case: str, tmp_path: Path) -> None:
    contents, line, key = CASES[case]
    path = write(tmp_path, contents)
    with pytest.raises(ConfigError) as info:
        Settings.load(environ={}, env_file=path)
    assert_names_the_line(str(info.value), path, line, key)


@pytest.mark.parametrize("case", list(CASES))
def test_the_gate_stops_with_a_usage_error(case: str, pytester: pytest.Pytester,
                                           clean_env: pytest.MonkeyPatch) -> None:
    gate_project(pytester, "import pytest\n@pytest.mark.preflight\ndef test_p():\n  pass\n")
    contents, line, key = CASES[case]
    path = write(pytester.path, contents)
    result = pytester.runpytest_inprocess(f"--env-file={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [ln for ln in result.errlines if ln.strip()]
    assert len(errors) == 1, result.errlines
    assert errors[0].startswith("ERROR: opsgate: --env-file")
    assert_names_the_line(errors[0], path, line, key)
    assert CANARY not in "\n".join(result.outlines)
    assert not (pytester.path / "reports").exists()


def test_every_unreadable_line_is_counted(tmp_path: Path) -> None:
    path = write(tmp_path, f'A="{CANARY}\nB\nC=1\nD\n')
    with pytest.raises(ConfigError, match=r"line 1: .*\(and 2 more unreadable\)$"):
        Settings.load(environ={}, env_file=path)


def run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=120, check=False)


def assert_one_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert CANARY not in proc.stderr + proc.stdout
    return lines[0]


def test_the_commands_stop_in_one_line_and_write_nothing(tmp_path: Path) -> None:
    """Real processes, as an operator runs them: pytest on this project's gate, the
    packaged gate, and the commands that read env files."""
    contents, line, key = CASES["unterminated double quote"]
    bad = write(tmp_path, contents)
    good = tmp_path / "good.env"
    good.write_text('DATABASE_URL="postgresql://u@127.0.0.1:9/db"\n')
    before = sorted(p.name for p in tmp_path.iterdir())

    gate = run(tmp_path, "-m", "pytest", "-p", "no:cacheprovider", f"--rootdir={ROOT}",
               "-c", str(ROOT / "pyproject.toml"), f"--reports-dir={tmp_path / 'reports'}",
               f"--env-file={bad}", str(ROOT / "checks"))
    assert_names_the_line(assert_one_line(gate, 4), bad, line, key)
    packaged = run(tmp_path, "-m", "opsgate.cli", "gate", f"--env-file={bad}")
    assert_names_the_line(assert_one_line(packaged, 4), bad, line, key)
    migrate = run(tmp_path, "-m", "opsgate.cli", "migrate", f"--env-file={bad}", "status")
    assert_names_the_line(assert_one_line(migrate, 2), bad, line, key)
    for source, target, which in ((bad, good, "source"), (good, bad, "target")):
        refresh = run(tmp_path, "-m", "opsgate.cli", "refresh", f"--source-env-file={source}",
                      f"--target-env-file={target}", f"--out={tmp_path / 'out'}")
        message = assert_one_line(refresh, 2)
        assert f"--{which}-env-file {bad}: line {line}" in message, message
        assert key is not None and key in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no reports, no run folder


def test_a_database_url_libpq_cannot_read_stops_every_command_in_one_line(
        tmp_path: Path) -> None:
    """A readable file whose DATABASE_URL libpq cannot parse (an unclosed "[" made
    Python's URL parser raise inside the redactor: a traceback, and an unsealed run
    folder): one line naming the variable, from every command that reads it."""
    bad = tmp_path / "bad.env"
    bad.write_text(f'DATABASE_URL="postgres://u:{CANARY}@[ep-1.neon.tech/app"\n')
    before = sorted(p.name for p in tmp_path.iterdir())
    named = "DATABASE_URL: libpq cannot read it"
    gate = run(tmp_path, "-m", "pytest", "-p", "no:cacheprovider", f"--rootdir={ROOT}",
               "-c", str(ROOT / "pyproject.toml"), f"--reports-dir={tmp_path / 'reports'}",
               f"--env-file={bad}", str(ROOT / "checks"))
    assert named in assert_one_line(gate, 4)
    for argv, code in ((("gate", f"--env-file={bad}"), 4),
                       (("migrate", f"--env-file={bad}", "status"), 2),
                       (("rollback", "status", f"--env-file={bad}"), 2),
                       (("env", f"--env-file={bad}"), 2)):
        proc = run(tmp_path, "-m", "opsgate.cli", *argv)
        assert named in assert_one_line(proc, code), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == before
