"""The opsgate pytest plugin: turns a plain ``pytest`` into the release gate.

Layout after pytest-xdist's: option and marker registration, then configuration (target,
marker expression), then per-test enforcement (required variables), then reporting
(header, redaction, "no check ran"). Gate behaviour applies only when the run collects
the checks folder (``pytest`` with no path, or a path inside ``checks/``); the
self-tests in ``tests/`` run as an ordinary pytest suite.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from opsgate import __version__, interrupts, resources
from opsgate.config import Settings, bind, unbind
from opsgate.errors import ConfigError, MissingEnvError, OpsgateError
from opsgate.gate import BY_MARKER, CHECKS, marker_expression, missing_env, needs_target
from opsgate.markexpr import MarkerExpression, MarkerExpressionError
from opsgate.pytest_plugin import oneline
from opsgate.reports import failure_kinds
from opsgate.reports.reasons import gate_failures
from opsgate.sensitive import Redactor
from opsgate.verify.evidence_types import ROLE_MARKER, EvidenceStore
from opsgate.verify.expectations import Expectations

#: The checks' fixtures (settings, read-only database, deployment client, evidence).
pytest_plugins = ["opsgate.pytest_plugin.fixtures"]

STATE_KEY = pytest.StashKey["GateState"]()
EVIDENCE_KEY = pytest.StashKey[EvidenceStore]()
SANDBOX_ENV_KEY = "opsgate_sandbox_env_file"
ALLURE_DIR_KEY = "opsgate_allure_dir"


@dataclass
class GateState:
    """What the plugin knows about this run, on the controller and on each worker."""

    settings: Settings
    gate_mode: bool
    expression: str | None = None
    expression_source: str = ""
    sandbox: Any = None
    target_kind: str = "environment"
    inspect_only: bool = False  # --collect-only, --markers, --fixtures, --help, --version
    narrowed: bool = False  # paths, node ids, -k, --lf, --sw, --deselect narrowed the gate
    executed: int = 0
    markers_seen: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)  # "nodeid: reason"
    partial: list[str] = field(default_factory=list)  # "nodeid: what was not checked"
    no_check_ran: bool = False
    flags_unserved: list[str] = field(default_factory=list)
    collector: Any = None  # reports.collector.RunCollector, on the controller
    reports_written: str | None = None
    reports_error: str | None = None
    expectations: Expectations = field(default_factory=Expectations)
    #: Databases and deployments that did not answer in this run, with the line that
    #: said so (one clear failure per cause; checks after the first fail at once).
    unreachable: dict[str, str] = field(default_factory=dict)
    #: What the run waited out or recovered from and passed anyway (a slow first
    #: connection, a connection the server ended mid-check): said at the end of the run.
    recovered: list[str] = field(default_factory=list)
    _redactor: Redactor | None = None
    #: SIGINT and SIGTERM as `interrupts.Interrupted` for the session (gate runs only).
    stop_signals: contextlib.ExitStack | None = None
    #: The run's settings made `config.in_effect` for the session (gate runs only): what
    #: the gate reaches without them in hand (the sandbox's PostgreSQL programs and
    #: cache, a table hash's connections) reads the env file too.
    bound: Any = None

    @property
    def redact(self) -> Redactor:
        """The settings' redactor, built once (settings never change once tests run)."""
        if self._redactor is None:
            self._redactor = self.settings.redactor()
        return self._redactor


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("opsgate", "opsgate release gate")
    group.addoption("--sandbox", action="store_true", default=False,
                    help="build a self-contained target (embedded PostgreSQL, reference API, "
                    "blob server on 127.0.0.1) and run the gate against it")
    group.addoption("--sandbox-scale", type=int, default=None, metavar="N",
                    help="seed the sandbox with a generated graph of N entities instead of "
                    "the fixture payload")
    group.addoption("--sandbox-profile", choices=("plain", "neon"), default="plain",
                    help="plain: one local server; neon: production's topology (TLS-only "
                    "server, non-superuser owner, PgBouncer in transaction mode in front, "
                    "pooled and direct URLs as Vercel writes them)")
    group.addoption("--env-file", default=None, metavar="PATH",
                    help="dotenv file with the target's variables (the environment wins)")
    group.addoption("--reports-dir", default=None, metavar="DIR",
                    help="where run reports go (default: <rootdir>/reports)")
    group.addoption("--no-reports", action="store_true", default=False,
                    help="write no report files for this run")
    parser.addini("opsgate_checks_dir", "folder that holds the runbook checks",
                  default="checks")


#: Options with which pytest only shows something (and runs no test): they need no
#: target, build no sandbox and write no report or history line.
_INSPECT_OPTIONS = ("collectonly", "markers", "showfixtures", "show_fixtures_per_test",
                    "help", "version")


def _inspect_only(config: pytest.Config) -> bool:
    return any(getattr(config.option, name, False) for name in _INSPECT_OPTIONS)


def _narrowed(config: pytest.Config) -> bool:
    """True when the user narrowed the gate the pytest way: a path or node id below the
    checks folder, ``-k``, ``--lf``, ``--sw`` or ``--deselect``. Flags then say what
    may run, not what must."""
    for checks in _checks_dirs(config):
        for arg in config.args:
            path, _, rest = str(arg).partition("::")
            p = (config.invocation_params.dir / path).resolve()
            if rest or (p != checks and checks in p.parents):
                return True
    option = config.option
    return bool(getattr(option, "keyword", "") or getattr(option, "lf", False)
                or getattr(option, "stepwise", False) or getattr(option, "deselect", None))


def _validate_markexpr(config: pytest.Config, expr: str) -> None:
    """Refuse a -m that cannot select what it names before anything is built: a
    syntax error, or a name that is no registered marker (a typo would otherwise
    build a sandbox, select nothing, and record a failed run)."""
    try:
        names = MarkerExpression.compile(expr).names
    except MarkerExpressionError as exc:
        raise pytest.UsageError(f"opsgate: -m {expr!r} is not a marker expression: {exc}"
                                ) from None
    known = {line.split(":", 1)[0].split("(", 1)[0].strip()
             for line in config.getini("markers")}
    unknown = sorted(names - known - {"True", "False"})
    if unknown:
        raise pytest.UsageError(
            f"opsgate: -m {expr!r} names no registered marker: {', '.join(unknown)}; "
            f"the checks' markers are {', '.join(c.marker for c in CHECKS)}")


def _checks_dirs(config: pytest.Config) -> list[Path]:
    """The folders whose collection makes a run the gate: this rootdir's checks folder
    (ini ``opsgate_checks_dir``) when it exists, and the runbook checks opsgate ships
    (`opsgate gate`)."""
    local = (config.rootpath / str(config.getini("opsgate_checks_dir"))).resolve()
    return [d for d in (local, resources.checks_dir().resolve()) if d.is_dir()]


def _is_gate_run(config: pytest.Config) -> bool:
    """True when the run collects a checks folder or something inside it; a run of the
    rootdir itself counts only for the rootdir's own checks folder. Loaded by a conftest
    or ``-p``, the plugin also sees runs that are not the gate (this repository's
    self-tests, a project's own tests beside its checks): those stay ordinary runs."""
    local = (config.rootpath / str(config.getini("opsgate_checks_dir"))).resolve()
    for checks in _checks_dirs(config):
        for arg in config.args:
            path = Path(str(arg).split("::", 1)[0])
            p = (config.invocation_params.dir / path).resolve()
            if p == checks or checks in p.parents:
                return True
            if checks == local and p == config.rootpath.resolve():
                return True
    return False


#: Gate options that take a path: given as "--opt PATH", pytest reads PATH as a test
#: path while it looks for its rootdir and ini file, before any plugin's options are
#: known, even one loaded with ``-p`` (a limitation of pytest's start-up).
_PATH_OPTIONS = ("--env-file", "--reports-dir")
#: Every gate option that takes a value. Loaded by a conftest (``pytest_plugins``), the
#: plugin adds its options only after pytest has chosen its first conftests, from the
#: command line as it read it without them: "--opt VALUE" then gave VALUE as a test path.
_VALUE_OPTIONS = (*_PATH_OPTIONS, "--sandbox-scale", "--sandbox-profile")


def _misread_option(config: pytest.Config) -> str | None:
    """Why a space-form option's value sent pytest's start-up astray, if it did:

    - the rootdir: pytest found no ini file, and an existing path was given as
      "--opt PATH" (`_PATH_OPTIONS`; also with ``-p``);
    - the first conftests: the plugin came from a conftest, and a value that is no
      path was taken for the run's only test path. pytest then loaded the conftests of
      the current folder's ``test*`` folders, the project's own test suite's among
      them, into the gate.
    """
    raw = [str(a) for a in config.invocation_params.args]
    # The command line as pytest read it before the conftests, public but undocumented.
    early = getattr(config, "known_args_namespace", None)
    taken = {str(a) for a in getattr(early, "file_or_dir", None) or ()}
    for i, arg in enumerate(raw[:-1]):
        value = raw[i + 1]
        if arg in _PATH_OPTIONS and config.inipath is None and Path(value).exists():
            return (f"pytest took the value of {arg} for a test path while it looked for "
                    f"its rootdir (it reads the command line before plugins add their "
                    f"options), so it found rootdir {config.rootpath} and no "
                    f"configuration; write {arg}=PATH, or run `opsgate gate`, which fixes "
                    f"its rootdir")
        if (arg in _VALUE_OPTIONS and value in taken
                and not (config.invocation_params.dir / value).exists()):
            return (f"pytest took {value!r}, the value of {arg}, for a test path before a "
                    f"conftest loaded this plugin and its options, and chose the conftests "
                    f"of {config.invocation_params.dir}'s test folders for the gate; write "
                    f"{arg}={value}, or load the plugin with -p "
                    f"opsgate.pytest_plugin.plugin (as `opsgate gate` does)")
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """tryfirst: junitxml and allure-pytest read the report paths set here."""
    _refuse_a_misread_option(config)
    for spec in CHECKS:
        config.addinivalue_line(
            "markers", f"{spec.marker}: {spec.title} (flag {spec.flag}; "
            f"needs {', '.join(spec.required_env)})"
        )
    config.addinivalue_line(
        "markers", f"{ROLE_MARKER}(role): what the reports read this test for "
        "(opsgate.verify.evidence_types): found by role, never by the test's name")
    workerinput = getattr(config, "workerinput", None)
    sandbox_file = workerinput.get(SANDBOX_ENV_KEY) if workerinput is not None else None
    gate_mode = _is_gate_run(config)
    settings = _load_settings(config, sandbox_file, gate_mode)
    state = GateState(settings=settings, gate_mode=gate_mode,
                      inspect_only=_inspect_only(config), narrowed=_narrowed(config))
    config.stash[STATE_KEY] = state
    if not state.gate_mode:
        return
    _enter_gate_mode(config, state)
    _choose_expression(config, state)
    if state.inspect_only:
        # Showing markers, fixtures or the collection needs no target and leaves no trace.
        state.target_kind = "none (inspection only)"
        return
    _choose_target(config, state, workerinput, sandbox_file)
    try:
        state.expectations = Expectations.load(state.settings.expectations_file)
    except ConfigError as exc:
        raise pytest.UsageError(f"opsgate: {exc}") from None
    if workerinput is not None:
        if workerinput.get(ALLURE_DIR_KEY) and not config.option.allure_report_dir:
            config.option.allure_report_dir = workerinput[ALLURE_DIR_KEY]
    elif not config.getoption("no_reports"):
        from opsgate.reports.collector import start_run

        start_run(config, state)


def _refuse_a_misread_option(config: pytest.Config) -> None:
    """A usage error when pytest took an option's value for a test path
    (`_misread_option`): the run would otherwise go on without the project's
    configuration, or with conftests that are not the gate's."""
    misread = _misread_option(config)
    if misread is not None:
        raise pytest.UsageError(f"opsgate: {misread}")


def _load_settings(config: pytest.Config, sandbox_file: str | None, gate_mode: bool
                   ) -> Settings:
    """The run's settings: the sandbox's file on an xdist worker of a sandbox run, else
    ``--env-file`` under the environment. With ``--sandbox`` the environment's target
    variables are left out from the start (the sandbox's replace them once it runs): a
    production URL there, readable or not, has nothing to do with the run. Outside the
    gate, bad settings are ignored."""
    env_file = config.getoption("env_file")
    try:
        return Settings.load(env_file=sandbox_file or env_file,
                             file_wins=bool(sandbox_file) or config.getoption("sandbox"))
    except ConfigError as exc:
        if gate_mode:
            raise pytest.UsageError(f"opsgate: {exc}") from None
        # Loaded by a conftest or `-p`, the plugin also sees runs that are not the gate:
        # those must not fail on the gate's variables.
        return Settings()


def _enter_gate_mode(config: pytest.Config, state: GateState) -> None:
    """What a gate run changes in pytest: its settings bound, stop signals, the
    execution counter, progress bars, one-line failures, hypothesis unloaded."""
    state.bound = bind(state.settings)
    # SIGTERM (CI's second signal, `timeout`, container runtimes) stops the gate as Ctrl-C
    # does: the check's cleanup runs and the reports say the run was interrupted.
    interrupts.reset()
    state.stop_signals = contextlib.ExitStack()
    state.stop_signals.enter_context(interrupts.stop_on_signals())
    config.pluginmanager.register(_ExecutionCounter(state), "opsgate-execution-counter")
    _route_progress(config)
    if config.option.tbstyle == "auto":
        # A check's failure is its message (what differs, bounded examples), one line per
        # cause; the code around the assert and its fixtures' reprs are noise to the
        # operator reading it. An explicit --tb still wins.
        config.option.tbstyle = "line"
    # hypothesis (the self-tests' dependency, where it is installed) imports its whole
    # package in its terminal summary: about a second of a gate run, for checks that
    # never use it.
    hypothesis_plugin = config.pluginmanager.get_plugin("hypothesispytest")
    if hypothesis_plugin is not None:
        config.pluginmanager.unregister(hypothesis_plugin)


def _choose_expression(config: pytest.Config, state: GateState) -> None:
    """The marker expression: ``-m`` (validated), else the RUN_OPS_* flags' (refused
    when every flag is false)."""
    if config.option.markexpr:
        _validate_markexpr(config, config.option.markexpr)
        state.expression, state.expression_source = config.option.markexpr, "-m"
        return
    expr = marker_expression(state.settings.flags)
    if not expr:
        raise pytest.UsageError(
            "opsgate: every RUN_OPS_* flag is false, so the gate would check nothing; "
            "turn at least one on or pass -m"
        )
    config.option.markexpr = expr
    state.expression, state.expression_source = expr, "RUN_OPS_* flags"


def _choose_target(config: pytest.Config, state: GateState, workerinput: Any,
                   sandbox_file: str | None) -> None:
    """The sandbox started (``--sandbox``, on the controller), or the sandbox's workers
    told so; a usage error when the selected checks need a target and none is set."""
    if config.getoption("sandbox") and workerinput is None:
        _start_sandbox(config, state)
    elif sandbox_file:
        state.target_kind = "sandbox"
    elif not state.settings.has_target and needs_target(state.expression or ""):
        raise pytest.UsageError(
            "opsgate: no target configured: set DATABASE_URL (or POSTGRES_URL), OPS_BASE_URL "
            "(VERCEL_TOKEN for the deployment check) and the other variables of "
            "docs/configuration.md, pass --env-file PATH, "
            "or run the gate on the sandbox with --sandbox"
            + ("; change_control needs no target: run it alone with -m change_control"
               if "change_control" in (state.expression or "") else "")
        )


def _route_progress(config: pytest.Config) -> None:
    """Bars of long work (sandbox build, drill, drift, parity) reach the terminal past
    pytest's capture; ``-q`` and xdist workers (no terminal) draw none."""
    from opsgate import progress

    if config.option.verbose < 0 or hasattr(config, "workerinput"):
        progress.silence()
        return
    capman = config.pluginmanager.getplugin("capturemanager")
    suspend = getattr(capman, "global_and_fixture_disabled", None)

    def end_pytest_line() -> None:
        reporter = config.pluginmanager.getplugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()

    progress.route_to(progress.UncapturedStderr(suspend), end_pytest_line)


def _start_sandbox(config: pytest.Config, state: GateState) -> None:
    from opsgate.sandbox import Sandbox  # imported late: uvicorn and starlette only for --sandbox

    try:
        sandbox = Sandbox.start(scale=config.getoption("sandbox_scale"),
                                profile=config.getoption("sandbox_profile"))
    except OpsgateError as exc:
        raise pytest.UsageError(f"opsgate: the sandbox did not start: {exc}") from None
    state.sandbox = sandbox
    state.target_kind = "sandbox"
    state.settings = Settings.load(env_file=sandbox.env_file, file_wins=True)
    state._redactor = None  # the sandbox's secrets replace the environment's


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: hand the one sandbox of this run to every worker."""
    state = node.config.stash.get(STATE_KEY, None)
    if state is not None and state.sandbox is not None:
        node.workerinput[SANDBOX_ENV_KEY] = str(state.sandbox.env_file)
    allure_dir = getattr(node.config.option, "allure_report_dir", None)
    if allure_dir:
        node.workerinput[ALLURE_DIR_KEY] = allure_dir


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """A stop can land on an instruction of a generator that has no line number (a
    check reading a stream): Python gives that traceback entry no ``tb_lineno``, and
    pytest's report of the interrupt failed on it (``TypeError: unsupported operand
    type(s) for -: 'NoneType' and 'int'``), the run ending in exit 1 with a traceback
    and a verdict of failed checks. Such entries, which have no line to show, are left
    out of the traceback pytest reports. tryfirst: before the terminal's report."""
    excinfo.traceback = excinfo.traceback.filter(_has_a_line)


def _has_a_line(entry: Any) -> bool:
    """A pytest ``TracebackEntry`` whose line number can be read."""
    try:
        entry.lineno  # noqa: B018  (the read is the test)
    except TypeError:
        return False
    return True


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is not None and state.sandbox is not None:
        state.sandbox.stop()
        state.sandbox = None
    if state is not None and state.stop_signals is not None:
        state.stop_signals.close()
        state.stop_signals = None
    if state is not None and state.bound is not None:
        unbind(state.bound)
        state.bound = None
    if state is not None and state.gate_mode:
        from opsgate import progress

        progress.route_to(None)
        progress.silence(False)


def get_state(config: pytest.Config) -> GateState:
    return config.stash[STATE_KEY]


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(STATE_KEY, None)
    if state is None or not state.gate_mode:
        return []  # not the gate: nothing to say in someone else's run
    expression = (f"opsgate: marker expression: {state.expression}  "
                  f"(from {state.expression_source})")
    if state.inspect_only:
        return [f"opsgate {__version__}: no target (inspection only)", expression]
    ident = state.settings.target_identity()
    where = ident["database"] or ident["base_url"] or "-"
    # The target's name, then what it is: "target sandbox sandbox" said the kind twice.
    if state.target_kind == "sandbox":
        origin = "a sandbox built for this run"
    else:
        env_file = config.getoption("env_file", None)
        origin = (f"settings from {env_file} and the environment" if env_file
                  else "settings from the environment")
    lines = [f"opsgate {__version__}: target {ident['name']} ({where}), {origin}"]
    if ident["database"]:
        kind = "pooled" if ident["database_pooled"] else "not a pooler"
        direct = ident["database_direct"] or (
            "none: the drill needs DATABASE_URL_UNPOOLED" if ident["database_pooled"]
            else "none (session work uses DATABASE_URL)")
        lines.append(f"opsgate: database {kind}; direct endpoint: {direct}")
    lines.append(expression)
    return lines


def _check_markers(item: pytest.Item) -> list[str]:
    return [m.name for m in item.iter_markers() if m.name in BY_MARKER]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """A selected check whose required variable is missing fails, naming it."""
    state = item.config.stash.get(STATE_KEY, None)
    if state is None or not state.gate_mode:
        return
    markers = _check_markers(item)
    missing = missing_env(state.settings, markers)
    if missing:
        # MissingEnvError behind the failure: its kind (`failure_kinds`) is the type's.
        raise pytest.fail.Exception(
            f"missing {', '.join(missing)}: required by the {'/'.join(markers)} check and "
            "not set in the environment or the --env-file",
            pytrace=False,
        ) from MissingEnvError(missing[0])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Scrub every known secret value from the report: the last line of defence."""
    outcome = yield
    state = item.config.stash.get(STATE_KEY, None)
    if state is None:
        return
    redact = state.redact
    report: pytest.TestReport = outcome.get_result()
    if state.gate_mode:
        oneline.shorten(item, call, report, redact)  # a check's failure: its one line
    if state.gate_mode and report.failed and call.excinfo is not None:
        kind = failure_kinds.kind_of(call.excinfo.value,
                                     verdict_types=(pytest.fail.Exception, AssertionError))
        report.user_properties.append(("opsgate_failure_kind", kind))
        first = failure_kinds.again_of(call.excinfo.value)
        if first is not None:  # one line, scrubbed, as the message it points back to
            report.user_properties.append(("opsgate_again_of", oneline.one_line(first, redact)))
    role = item.get_closest_marker(ROLE_MARKER)
    if role is not None and call.when == "setup":
        # On the item's properties, so every later report of the test (and a worker's,
        # under xdist) carries it to the controller, whatever the outcome.
        report.user_properties.append(("opsgate_role", str(role.args[0])))
    found = item.stash.get(EVIDENCE_KEY, None)
    if found and call.when == "call":
        text = json.dumps(found.as_json(), default=str, sort_keys=True)
        text = redact(text) if redact else text
        report.user_properties.append(("opsgate_evidence", text))
        _attach_to_allure(text)
    if not redact:
        return
    if report.longrepr is not None:
        text = str(report.longrepr)
        clean = redact(text)
        if clean != text:
            report.longrepr = clean
    report.sections = [(title, redact(body)) for title, body in report.sections]


def _attach_to_allure(evidence_json: str) -> None:
    """The check's evidence as a JSON attachment of its Allure result (when Allure runs)."""
    import allure

    # Reporting must never turn a verdict: an attachment that fails is dropped.
    with contextlib.suppress(Exception):
        allure.attach(json.dumps(json.loads(evidence_json), indent=2), name="evidence",
                      attachment_type=allure.attachment_type.JSON)


class _ExecutionCounter:
    """Counts checks that actually ran (on the xdist controller, from worker reports)."""

    def __init__(self, state: GateState) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped:
            # A selected check that skipped did not run: it is not a pass.
            self.state.skipped.append(f"{report.nodeid}: {_skip_reason(report)}")
            return
        if report.when == "call" or (report.when == "setup" and report.failed):
            self.state.executed += 1
            self.state.markers_seen.update(k for k in report.keywords if k in BY_MARKER)
        for name, value in report.user_properties:
            if name == "opsgate_evidence":
                with contextlib.suppress(TypeError, ValueError, AttributeError):
                    partial = json.loads(str(value)).get("partial")
                    if partial:
                        self.state.partial.append(f"{report.nodeid}: {partial}")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "skipped").splitlines()[0]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(STATE_KEY, None)
    if (state is None or not state.gate_mode or state.inspect_only
            or hasattr(session.config, "workerinput")):
        return
    if state.skipped and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if state.executed == 0 and exitstatus in (
        pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED
    ):
        state.no_check_ran = True
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif state.expression_source != "-m" and not state.narrowed and exitstatus in (
        pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED
    ):
        # A flag that asked for a check which did not run must not pass silently.
        asked = [c for c in CHECKS
                 if state.settings.flags.get(c.flag) and c.marker not in state.markers_seen]
        if asked:
            state.flags_unserved = [f"{c.flag} ({c.marker})" for c in asked]
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is None:
        return
    if state.reports_written:
        terminalreporter.write_line(f"opsgate: reports in {state.reports_written}")
    if state.reports_error:
        terminalreporter.write_line(f"opsgate: reports NOT written: {state.reports_error}",
                                    red=True)
    for line in state.partial:
        terminalreporter.write_line(f"opsgate: PARTIAL: {state.redact(line)}", yellow=True)
    for line in state.recovered:
        terminalreporter.write_line(f"opsgate: NOTE: {state.redact(line)}", yellow=True)
    for note in gate_failures(state):  # the same sentences as the reports' notes
        terminalreporter.write_line(f"opsgate: FAILED: {state.redact(note)}", red=True)
