"""The payload side of knowledge drift, in a process of its own.

Drift's two sides are independent until they are compared: parsing, validating,
canonicalising and sorting the payload is all client work, reading the kb is mostly the
server's and the network's. One interpreter does one of them at a time (the GIL); two
processes keep both cores busy. A thread overlapping the two was measured first and
gained 6%.

Protocol (stdin: one JSON object ``{"path", "label", "folder", "chunk_size"}``; stdout,
one line each): ``tick N`` as members are read, then ``result {summary}`` or ``error
{"message"}`` for a payload that is not what its contract says. The payload's path is
not a secret, but it goes through stdin with the rest, as anything a process is given.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from opsgate.errors import OpsgateError


def main() -> int:
    from opsgate.verify.payload import PayloadReader, payload_side

    args = json.loads(sys.stdin.readline())
    path = Path(args["path"])
    out = sys.stdout

    def tick(n: int) -> None:
        out.write(f"tick {n}\n")
        out.flush()

    reader = PayloadReader(lambda: path.open("rb"), args["label"], path)
    try:
        summary = payload_side(reader, Path(args["folder"]), int(args["chunk_size"]), tick)
    except OpsgateError as exc:
        out.write("error " + json.dumps({"message": str(exc), "kind": type(exc).__name__}) + "\n")
        return 3
    out.write("result " + json.dumps(asdict(summary)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
