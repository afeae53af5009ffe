"""The JSON Schemas of fixtures/contracts/, loaded once, and validation with bounded,
readable error lists (a schema error names the JSON path, never dumps the document)."""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema

from opsgate import resources
from opsgate.errors import ContractError

CONTRACTS_DIR = resources.fixtures_dir() / "contracts"
MAX_ERRORS = 5


@functools.cache
def schema(name: str) -> dict[str, Any]:
    path = CONTRACTS_DIR / f"{name}.schema.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def problems(name: str, document: Any, limit: int = MAX_ERRORS) -> list[str]:
    """Up to ``limit`` violations as 'path: message' lines (message cut to 120 chars)."""
    validator = jsonschema.Draft202012Validator(schema(name))
    out = []
    for err in validator.iter_errors(document):
        path = "$" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]"
                             for p in err.absolute_path)
        out.append(f"{path}: {err.message[:120]}")
        if len(out) >= limit:
            break
    return out


def validate(name: str, document: Any, what: str) -> None:
    found = problems(name, document)
    if found:
        raise ContractError(what, found)
