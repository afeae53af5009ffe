"""The JSON Schemas of fixtures/contracts/, loaded once, and validation with bounded,
readable error lists (a schema error names the JSON path, never dumps the document).

Large documents are validated an item at a time while they stream (`ItemValidator`): the
compiled validator (jsonschema-rs) decides, and only an item it rejects is explained by
the pure-Python one, so messages read the same whichever path found the fault."""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema_rs

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
    import jsonschema  # the pure-Python validator explains; it is not loaded before

    return _explain(jsonschema.Draft202012Validator(schema(name)), document, "$", limit)


def _explain(validator: Any, document: Any, root: str, limit: int) -> list[str]:
    out = []
    for err in validator.iter_errors(document):
        path = root + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]"
                              for p in err.absolute_path)
        out.append(f"{path}: {err.message[:120]}")
        if len(out) >= limit:
            break
    return out


class ItemValidator:
    """One definition (``$defs/<kind>``) of a contract, for items of a streamed array.

    Validating a whole 90 MB document at once would need it whole in memory; the items of
    its arrays are checked one by one instead, each against its subschema, and the
    envelope on its own (with the arrays emptied)."""

    def __init__(self, name: str, kind: str) -> None:
        self.kind = kind
        sub = {"$defs": schema(name)["$defs"], "$ref": f"#/$defs/{kind}"}
        self._fast = jsonschema_rs.Draft202012Validator(sub)
        import jsonschema  # see `validate`

        self._slow = jsonschema.Draft202012Validator(sub)

        #: The compiled check alone: True for a valid item.
        self.is_valid: Any = self._fast.is_valid
        self._all = jsonschema_rs.Draft202012Validator(
            {"$defs": sub["$defs"], "type": "array", "items": {"$ref": f"#/$defs/{kind}"}})

    def all_valid(self, items: list[Any]) -> bool:
        """True when every item is valid: one call for a batch (half the cost of one
        call per item, measured); only a batch that fails is checked item by item."""
        return bool(self._all.is_valid(items))

    def problems(self, item: Any, path: str, limit: int = MAX_ERRORS) -> list[str]:
        """Nothing for a valid item; else up to ``limit`` 'path: message' lines, ``path``
        being where the item sits (``$['nodes'][7]``)."""
        if self.is_valid(item):
            return []
        return _explain(self._slow, item, path, limit)


def validate(name: str, document: Any, what: str) -> None:
    found = problems(name, document)
    if found:
        raise ContractError(what, found)
