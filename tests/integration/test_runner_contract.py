"""The runner's documented contract, as a new user writing a migration meets it, through
the real CLI: one JSON summary whatever happens, stages in the runbook's order, flags
that would do nothing refused, an edited script refused, the summary's documented
fields and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from tests.migration_helpers import (
    ROOT,
    SCRIPT_TEMPLATE,
    WIDGETS,
    cli,
    db_fingerprint,
    ledger_rows,
    widget_dir,
)


def _one_line_no_traceback(err: str) -> None:
    assert "Traceback" not in err, err


def test_a_script_that_fails_to_import_still_prints_one_summary(fresh_db: str,
                                                                tmp_path: Path) -> None:
    d = tmp_path / "mig"
    d.mkdir()
    (d / f"{WIDGETS}.py").write_text("import no_such_module_anywhere\n")
    code, out, err = cli(fresh_db, "run", WIDGETS, migrations=d)
    assert code == 2 and isinstance(out, dict), (code, out, err)
    assert out["status"] == "failed" and out["exit_code"] == 2
    assert out["migration"] == WIDGETS and out["migrations_dir"] == str(d)
    assert f"{WIDGETS}.py" in out["message"] and "no_such_module_anywhere" in out["message"]
    _one_line_no_traceback(err)
    assert ledger_rows(fresh_db) == []


def test_a_script_with_a_syntax_error_names_the_line(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "mig"
    d.mkdir()
    (d / f"{WIDGETS}.py").write_text("SOURCE = 'none'\ndef plan(ctx)\n    return 1\n")
    code, out, err = cli(fresh_db, "run", WIDGETS, migrations=d)
    assert code == 2 and out["status"] == "failed", (code, out, err)
    assert "SyntaxError" in out["message"] and "line 2" in out["message"]
    _one_line_no_traceback(err)


def test_an_unknown_name_prints_one_summary(fresh_db: str) -> None:
    code, out, err = cli(fresh_db, "run", "20990101_1_a_to_b_nope", "--apply")
    assert code == 2 and isinstance(out, dict), (code, out, err)
    assert out["status"] == "failed" and out["mode"] == "apply"
    assert out["migration"] == "20990101_1_a_to_b_nope"
    assert "no migration named" in out["message"] and "no migration named" in err


def test_a_badly_named_file_in_the_folder_prints_one_summary(fresh_db: str,
                                                             tmp_path: Path) -> None:
    d = widget_dir(tmp_path)
    (d / "2026_widgets.py").write_text("")
    code, out, err = cli(fresh_db, "run", WIDGETS, migrations=d)
    assert code == 2 and isinstance(out, dict), (code, out, err)
    assert out["status"] == "failed" and "2026_widgets.py" in out["message"]
    assert ledger_rows(fresh_db) == []


def test_preconditions_run_before_plan(fresh_db: str, tmp_path: Path) -> None:
    """A precondition guarding a table plan reads fires, instead of plan's raw
    'relation does not exist'."""
    d = tmp_path / "mig"
    d.mkdir()
    script = SCRIPT_TEMPLATE.format(verify="return []").replace(
        "def preconditions(ctx):\n    return []",
        "def preconditions(ctx):\n"
        "    return [] if ctx.table_exists('gadgets') else ['table gadgets is missing']",
    ).replace(
        "def plan(ctx):\n",
        "def plan(ctx):\n    ctx.conn.execute('SELECT count(*) FROM gadgets')\n",
    )
    (d / f"{WIDGETS}.py").write_text(script)
    code, out, err = cli(fresh_db, "run", WIDGETS, "--apply", migrations=d)
    assert code == 1 and out["status"] == "precondition-failed", (out, err)
    assert out["preconditions"] == ["table gadgets is missing"]
    assert "timings_s" in out and "plan" not in out["timings_s"]
    assert ledger_rows(fresh_db) == []


def test_flags_that_would_do_nothing_are_refused(fresh_db: str, tmp_path: Path) -> None:
    d = widget_dir(tmp_path)
    before = db_fingerprint(fresh_db)
    cases = {
        ("--apply", "--force"): "--force needs --reason",
        ("--force",): "--force needs --reason",
        ("--reason", "INC-1"): "--reason is only for --force",
        ("--apply", "--reason", "INC-1"): "--reason is only for --force",
    }
    for flags, said in cases.items():
        code, out, err = cli(fresh_db, "run", WIDGETS, *flags, migrations=d)
        assert code == 1 and isinstance(out, dict), (flags, code, out, err)
        assert out["status"] == "refused" and out["exit_code"] == 1, flags
        assert said in out["message"] and said in err, (flags, out["message"])
    assert db_fingerprint(fresh_db) == before


def test_force_without_apply_is_the_dry_run_of_a_forced_run(fresh_db: str,
                                                           tmp_path: Path) -> None:
    """Not a flag that does nothing: the dry run ignores the ledger's previous hash, as
    the forced apply would, and says so."""
    d = widget_dir(tmp_path)
    cli(fresh_db, "run", WIDGETS, "--apply", migrations=d)
    before = db_fingerprint(fresh_db)
    env = {"WIDGET_VERSION": "2"}  # another payload hash: refused without --force
    code, out, _ = cli(fresh_db, "run", WIDGETS, migrations=d, env=env)
    assert code == 1 and out["status"] == "refused"
    code, out, err = cli(fresh_db, "run", WIDGETS, "--force", "--reason", "INC-1",
                         migrations=d, env=env)
    assert code == 0 and out["status"] == "planned" and out["mode"] == "dry-run", err
    assert "dry run of a forced run" in out["message"]
    assert db_fingerprint(fresh_db) == before


def test_an_edited_script_is_refused_then_forced(fresh_db: str, tmp_path: Path) -> None:
    d = widget_dir(tmp_path)
    code, out, _ = cli(fresh_db, "run", WIDGETS, "--apply", migrations=d)
    assert code == 0 and out["status"] == "applied"
    script = d / f"{WIDGETS}.py"
    script.write_text(script.read_text() + "\n# edited\n")
    for flags in ((), ("--apply",)):
        code, out, err = cli(fresh_db, "run", WIDGETS, *flags, migrations=d)
        assert code == 1 and out["status"] == "refused", (flags, out, err)
        assert "edited after it was applied" in out["message"]
        assert "--force --reason" in out["message"]
    assert len(ledger_rows(fresh_db)) == 1
    code, out, _ = cli(fresh_db, "run", WIDGETS, "--apply", "--force", "--reason",
                       "INC-7: script fixed", migrations=d)
    assert code == 0 and out["status"] == "applied" and out["mode"] == "force"
    rows = ledger_rows(fresh_db)
    assert [r["mode"] for r in rows] == ["apply", "force"]
    assert rows[1]["script_checksum"] == out["script_checksum"] != rows[0]["script_checksum"]
    code, out, _ = cli(fresh_db, "run", WIDGETS, "--apply", migrations=d)
    assert code == 0 and out["status"] == "noop"


def _documented_fields() -> set[str]:
    text = (ROOT / "docs" / "migrations.md").read_text()
    section = text.split("### The summary (stdout)", 1)[1].strip().split("\n\n", 1)[0]
    words = set(re.findall(r"`([a-z_]+)[`.]", section))
    return words - {"apply", "force", "null"}


def test_the_summary_has_exactly_the_documented_fields(fresh_db: str, tmp_path: Path) -> None:
    d = widget_dir(tmp_path)
    documented = _documented_fields()
    assert {"migration", "migrations_dir", "exit_code", "statement_timeout_s"} <= documented
    runs = [cli(fresh_db, "run", WIDGETS, migrations=d),                 # planned
            cli(fresh_db, "run", WIDGETS, "--apply", migrations=d),      # applied
            cli(fresh_db, "run", WIDGETS, "--force", migrations=d),      # refused early
            cli(fresh_db, "run", "20990101_1_a_to_b_nope", migrations=d)]  # unknown
    for code, out, err in runs:
        assert isinstance(out, dict), (code, out, err)
        assert set(out) == documented, (out["status"], set(out) ^ documented)
        assert set(out["target_counts"]) == {"before", "after"}


def test_an_unreadable_env_file_prints_one_summary(fresh_db: str, tmp_path: Path) -> None:
    d = widget_dir(tmp_path)
    missing = tmp_path / "no.env"
    code, out, err = cli(fresh_db, "run", WIDGETS, "--env-file", str(missing), migrations=d)
    assert code == 2 and isinstance(out, dict), (code, out, err)
    assert out["status"] == "failed" and out["migration"] == WIDGETS
    assert "no.env" in out["message"]
    _one_line_no_traceback(err)
