"""``opsgate``: the one front door.

``opsgate gate [pytest args]`` is the release gate from an installed package (exactly
``pytest`` on the runbook checks opsgate ships); ``opsgate migrate ...`` the guarded
runner; ``opsgate sandbox up`` the sandbox in the foreground; ``opsgate reports
verify|list|show`` the history; ``opsgate refresh`` the guarded production-to-local
refresh; ``opsgate env`` every variable, its value (secrets masked) and where it came
from; ``opsgate rollback status|to-blob|to-neon`` the guarded switch of the admin
storage to the blob fallback and back. Options go before or after the subcommand. Exit
codes:
0 success, 1 a check or migration failed or was refused, 2 usage or configuration error
(``gate`` returns pytest's own codes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from opsgate import __version__, interrupts, resources
from opsgate.operation import EXIT_USAGE
from opsgate.pipes import reader_went_away

#: pytest's exit code for an interrupted session (``pytest.ExitCode.INTERRUPTED``), which
#: a gate stopped before pytest's session began returns too.
GATE_INTERRUPTED = 2


def build_parser() -> argparse.ArgumentParser:
    # Imported here, not at the top: `opsgate gate` must reach pytest having imported
    # as little as possible (pytest rewrites asserts only in modules it imports itself).
    from opsgate import envlist
    from opsgate.migrate import cli as migrate_cli
    from opsgate.refresh import cli as refresh_cli
    from opsgate.reports import cli as reports_cli
    from opsgate.rollback import cli as rollback_cli
    from opsgate.sandbox import cli as sandbox_cli

    p = argparse.ArgumentParser(prog="opsgate", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"opsgate {__version__}")
    sub = p.add_subparsers(dest="area",
                           metavar="{gate,migrate,sandbox,reports,refresh,rollback,env}")
    sub.add_parser("gate", help="the release gate: pytest on the runbook checks opsgate "
                   "ships (pytest's options and arguments pass through)", add_help=False)
    m = sub.add_parser("migrate", help="data migrations under the runbook's safeguards")
    migrate_cli.add_arguments(m)
    sandbox_cli.add_parser(sub)
    reports_cli.add_parser(sub)
    refresh_cli.add_parser(sub)
    rollback_cli.add_parser(sub)
    envlist.add_parser(sub)
    return p


#: The gate's pytest plugin, loaded by name on the command line: opsgate registers no
#: pytest entry point (it would add its options to every pytest run of the environment,
#: the app's own tests included), and pytest-xdist's workers get the same command line.
PLUGIN = "opsgate.pytest_plugin.plugin"


def gate(args: Sequence[str]) -> int:
    """``pytest`` with the packaged checks, the packaged pytest settings, the plugin and
    the current folder as rootdir (so reports land in ./reports), whatever folder it runs
    in; pytest's cache goes with the reports, so the folder gets nothing else."""
    import pytest

    ini = Path(__file__).resolve().parent / "pytest_plugin" / "gate.ini"
    given = [_packaged(a) for a in args]
    with _cache_dir(given) as cache:
        where = [] if cache is None else ["-o", f"cache_dir={cache}"]
        argv = ["-c", str(ini), f"--rootdir={Path.cwd()}", "-p", PLUGIN, *where, *given]
        if not any(_names_checks(a) for a in given):
            argv.append(str(resources.checks_dir()))
        return int(pytest.main(argv))


def _stops_ignored() -> None:
    """The gate is over and its exit code decided: a stop from here to the process's end
    (the interpreter's shutdown, 0.1-0.2 s) would only turn that code, and a run already
    recorded, into death by the signal. SIGKILL still ends it."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _stoppable_gate(args: Sequence[str]) -> int:
    """`gate`, said in one line when a stop lands outside what the gate's plugin reports:
    during pytest's start-up (under SIGTERM too, whose default action would end it
    without a word), before the run is recorded, or as pytest ends, after it."""
    runs = _reports_dir(_reporting_options(args)) / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    try:
        with interrupts.stop_on_signals():
            code = gate(args)
        if code != GATE_INTERRUPTED or interrupts.received() is None:
            return code
    except KeyboardInterrupt:
        pass
    made = sorted(set(runs.iterdir()) - before) if runs.is_dir() else []
    if not made:
        print("opsgate: interrupted before the gate started; no run was recorded",
              file=sys.stderr)
        return GATE_INTERRUPTED
    recorded = _recorded_exit(made[-1] / "summary.json")
    if recorded is None:
        print(f"opsgate: interrupted as the gate ended; its record {made[-1]} is "
              "incomplete (`opsgate reports verify`)", file=sys.stderr)
        return GATE_INTERRUPTED
    return recorded  # a stop after the run was recorded: the record's code stands


def _recorded_exit(summary: Path) -> int | None:
    """The exit status a run's summary.json recorded (None: no readable summary)."""
    from opsgate.reports import summary_reader

    doc = summary_reader.load(summary)
    status = doc.get("exit_status") if doc is not None else None
    return status if isinstance(status, int) else None


@contextlib.contextmanager
def _cache_dir(args: Sequence[str]) -> Iterator[Path | None]:
    """Where pytest keeps what ``--lf`` and ``--sw`` remember: ``.pytest_cache`` in the
    reports folder (``--reports-dir DIR`` or ./reports), not pytest's default, the rootdir
    (the app's folder). With ``--no-reports``, a temporary folder removed after the run:
    nothing is written, and ``--lf`` remembers nothing. None with ``-p no:cacheprovider``
    (pytest would warn of an unknown setting)."""
    known = _reporting_options(args)
    if "no:cacheprovider" in known.plugins:
        yield None
    elif known.no_reports:
        with tempfile.TemporaryDirectory(prefix="opsgate-pytest-cache-") as tmp:
            yield Path(tmp)
    else:
        yield _reports_dir(known) / ".pytest_cache"


def _reporting_options(args: Sequence[str]) -> argparse.Namespace:
    """``--reports-dir``, ``--no-reports`` and ``-p`` of a gate's command line."""
    import shlex

    # argparse reads just these of pytest's options, in both spellings, as pytest will
    # (no abbreviations; PYTEST_ADDOPTS first); a malformed command line is left to
    # pytest to refuse.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--reports-dir")
    parser.add_argument("--no-reports", action="store_true")
    parser.add_argument("-p", dest="plugins", action="append", default=[])
    try:
        known, _ = parser.parse_known_args(
            [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *args])
    except (argparse.ArgumentError, ValueError):  # ValueError: shlex, unbalanced quotes
        known = argparse.Namespace(reports_dir=None, no_reports=False, plugins=[])
    return known


def _reports_dir(known: argparse.Namespace) -> Path:
    """The gate's reports folder (`_reporting_options`): ``--reports-dir`` or ./reports."""
    return Path(known.reports_dir or "reports").resolve()


def _packaged(arg: str) -> str:
    """``test_parity.py::test_x`` (as the gate's own output names a check) -> the same
    node in the packaged checks, when no such file is in the current folder."""
    path, sep, rest = arg.partition("::")
    if arg.startswith("-") or not path.endswith(".py") or Path(path).exists():
        return arg
    shipped = resources.checks_dir() / Path(path).name
    return f"{shipped}{sep}{rest}" if shipped.is_file() else arg


def _names_checks(arg: str) -> bool:
    """An argument naming some of the packaged checks (``.../test_parity.py::test_x``):
    then it, not the whole checks folder, is what the gate collects."""
    checks = resources.checks_dir().resolve()
    path = Path(arg.split("::", 1)[0]).resolve()
    return path == checks or checks in path.parents


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["gate"]:
        # Everything after `gate` is pytest's, unparsed here ("--env-file PATH" included).
        gate_code = _stoppable_gate(args_list[1:])
        if argv is None:  # this process is the command: its exit code is decided
            _stops_ignored()
        return gate_code
    parser = build_parser()
    if not args_list:
        parser.print_help()
        return 0
    args = parser.parse_args(args_list)
    try:
        if args.area == "migrate":
            from opsgate.migrate import cli as migrate_cli

            return migrate_cli.dispatch(args)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return EXIT_USAGE
        code: int = handler(args)
        return code
    except KeyboardInterrupt:  # Ctrl-C before a command's own handling: no traceback
        print("opsgate: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return reader_went_away()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
