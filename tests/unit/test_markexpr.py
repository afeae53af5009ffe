"""opsgate's parser of ``-m`` (`opsgate.markexpr`) selects what pytest selects and
refuses what pytest refuses, held to real pytest runs."""

from __future__ import annotations

from typing import Any

import pytest

from opsgate.markexpr import MarkerExpression, MarkerExpressionError

#: Test functions and their markers: (name, [(marker, kwargs)]).
TESTS: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = [
    ("test_a", [("a", {})]),
    ("test_b", [("b", {})]),
    ("test_ab", [("a", {}), ("b", {})]),
    ("test_none", []),
    ("test_c", [("c", {})]),
    ("test_c_kw", [("c", {"x": 1, "s": "hi", "f": False, "n": None, "neg": -3})]),
    ("test_dashed", [("x-y", {}), ("a", {})]),
    ("test_dotted", [("v1.2/k", {})]),
]

SELECTING = [
    "a", "not a", "a and b", "a or b", "a and not b", "not (a or b)", "(a or c) and not b",
    "a or b and c", "not not a", "a and (b or not x-y)", "x-y", "v1.2/k", "c", "c(x=1)",
    "c(x=2)", "c(s='hi')", 'c(s="hi", f=False)', "c(n=None)", "c(neg=-3)", "c(x=1) or b",
    "not c(x=1)", "c (x=1,s='hi')", "\ta\tor  b", "((a))", "a or not (c(f=True) or b)",
    "True", "not False", "and_x or or_y",
]

REFUSED = [
    "a or", "(a", "a)", "a b", "not", "c(x=)", "c(1=2)", "c(x=y)", "c(x='a\\b')", "'a'",
    "a $ b", "c(x=1,)", "c(x='open)", "c(def=1)", "()", "a and and b", "a\nor b", "c()",
]


def _marks_source(marks: list[tuple[str, dict[str, Any]]]) -> str:
    lines = []
    for name, kwargs in marks:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        lines.append(f"@getattr(pytest.mark, {name!r})({args})" if args else
                     f"@getattr(pytest.mark, {name!r})")
    return "\n".join(lines)


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """The tests of `TESTS` under pytest alone: no installed plugin (opsgate's included)
    takes part in the selection."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    names = sorted({m for _, marks in TESTS for m, _ in marks} | {"and_x", "or_y", "True"})
    pytester.makeini("[pytest]\nmarkers =\n" + "".join(f"    {n}\n" for n in names))
    pytester.makepyfile("import pytest\n\n" + "\n\n".join(
        f"{_marks_source(marks)}\ndef {name}():\n    pass\n" for name, marks in TESTS))
    return pytester


def _matcher(marks: list[tuple[str, dict[str, Any]]]) -> Any:
    missing = object()

    def matcher(name: str, /, **kwargs: Any) -> bool:
        return any(m == name and all(kw.get(k, missing) == v for k, v in kwargs.items())
                   for m, kw in marks)

    return matcher


def _run(suite: pytest.Pytester, expr: str) -> pytest.HookRecorder:
    return suite.inline_run("-p", "no:cacheprovider", "-m", expr, "-q")


@pytest.mark.parametrize("expr", SELECTING)
def test_it_selects_what_pytest_selects(suite: pytest.Pytester, expr: str) -> None:
    compiled = MarkerExpression.compile(expr)
    ours = {name for name, marks in TESTS if compiled.evaluate(_matcher(marks))}
    run = _run(suite, expr)
    assert run.ret in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED), expr
    passed, _, _ = run.listoutcomes()
    assert ours == {r.nodeid.split("::")[-1] for r in passed}, expr


@pytest.mark.parametrize("expr", REFUSED)
def test_it_refuses_what_pytest_refuses(suite: pytest.Pytester, expr: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(MarkerExpressionError, match=r"^column \d+: "):
        MarkerExpression.compile(expr)
    assert _run(suite, expr).ret == pytest.ExitCode.USAGE_ERROR
    assert "Wrong expression passed to '-m'" in capsys.readouterr().err


def test_it_names_the_markers_only() -> None:
    assert MarkerExpression.compile("c(x=1, s='b') and not (a or x-y)").names == {
        "c", "a", "x-y"}
    assert MarkerExpression.compile("").names == frozenset()


def test_an_empty_expression_is_false() -> None:
    assert MarkerExpression.compile("").evaluate(lambda name, /, **kw: True) is False
    assert MarkerExpression.compile("  ").evaluate(lambda name, /, **kw: True) is False


def test_an_error_says_where() -> None:
    with pytest.raises(MarkerExpressionError,
                       match=r"^column 6: expected not or \( or ident; got the end$"):
        MarkerExpression.compile("a or ")
