"""opsgate: the operations runbook of a PostgreSQL-backed web app, as a release gate.

PYTEST_DONT_REWRITE: the package holds no test assertions (the checks are test modules
of their own), and `opsgate gate` imports it before pytest starts.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("opsgate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+source"

__all__ = ["__version__"]

from opsgate import _legacy

_legacy.install()
