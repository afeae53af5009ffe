"""The one shape of everything opsgate starts and must stop (servers, poolers, targets).

``with Thing() as thing:`` starts it and stops it whatever happens; ``stop()`` is
idempotent, so ``atexit`` hooks and watchdogs may call it again.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Service"]


class Service:
    """Base of a startable, stoppable resource. Subclasses implement both methods."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
