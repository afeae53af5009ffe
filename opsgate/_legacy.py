"""Module names of opsgate before its package was split into subpackages, kept alive
for the migration scripts already applied in production.

An applied script's checksum is in every production ledger, and the ledger check
reports a script edited after apply (as it must): so those scripts are never edited,
not even their imports, and ``from opsgate import canon`` or ``from opsgate.schema
import KB_TABLES`` must keep meaning what it meant. No library maps a module name onto
another module lazily, so this small finder does: each old name imports its new home.
New code uses the new names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

#: Old module name -> where it lives now.
ALIASES = {
    "opsgate.schema": "opsgate.clients.schema",
    "opsgate.blob": "opsgate.clients.blob",
    "opsgate.kb": "opsgate.clients.kb",
    "opsgate.canon": "opsgate.verify.canon",
    "opsgate.drift": "opsgate.verify.drift",
    "opsgate.extsort": "opsgate.verify.extsort",
    # opsgate.target was renamed opsgate.clients (a folder named "target" is a build
    # folder to common .gitignore templates); 1005 and 1006 import the old names.
    "opsgate.target": "opsgate.clients",
    "opsgate.target.kb": "opsgate.clients.kb",
    "opsgate.target.blob": "opsgate.clients.blob",
}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in ALIASES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(ALIASES[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module is the real one, already executed."""


def install() -> None:
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        # First: an old package name (opsgate.target) must not let the path finder load
        # its submodules a second time from the new folder under their old names.
        sys.meta_path.insert(0, _AliasFinder())
