"""The refresh's errors, in opsgate's one hierarchy."""

from __future__ import annotations

from opsgate.errors import OpsgateError


class RefreshError(OpsgateError):
    """The refresh could not be carried out (a tool failed, a verification failed)."""

