"""Named steps of long work, reported to whoever runs the engine.

The engines know nothing of pytest or Allure: a caller that wants the steps in a report
(the checks pass ``allure.step``) or on a terminal passes a `StepFn`; everyone else gets
`no_steps`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

__all__ = ["StepFn", "no_steps"]

#: ``step("title")`` returns a context manager that spans the step.
StepFn = Callable[[str], AbstractContextManager[Any]]


def no_steps(title: str) -> AbstractContextManager[None]:
    return nullcontext()
