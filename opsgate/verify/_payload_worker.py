"""The payload side of knowledge drift, in a process of its own.

Drift's two sides are independent until they are compared: parsing, validating,
canonicalising and sorting the payload is all client work, reading the kb is mostly the
server's and the network's. One interpreter does one of them at a time (the GIL); two
processes keep both cores busy. A thread overlapping the two was measured first and
gained 6%.

Protocol (stdin: one JSON object ``{"path", "label", "folder", "chunk_size"}``; stdout,
one line each): ``header {"domains"}``, ``tick N`` as members are read, ``runs {"kind",
"runs"}`` as each array's sorted runs are written (the first process merges and hashes
them, the edges while this one still reads the nodes, or the other way round), then
``done {"seconds"}``, or ``error {"message", "kind"}`` for a payload that is not what
its contract says. The payload's path is
not a secret, but it goes through stdin with the rest, as anything a process is given.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from opsgate.errors import OpsgateError


def main() -> int:
    from opsgate.verify.payload import PayloadReader, cycle_collector_paused

    args = json.loads(sys.stdin.readline())
    path = Path(args["path"])
    out = sys.stdout

    def tick(n: int) -> None:
        out.write(f"tick {n}\n")
        out.flush()

    def say(word: str, what: object) -> None:
        out.write(f"{word} {json.dumps(what)}\n")
        out.flush()

    t = time.monotonic()
    reader = PayloadReader(lambda: path.open("rb"), args["label"], path)
    try:
        say("header", {"domains": list(reader.header()["domains"])})
        with cycle_collector_paused():
            reader.graph_runs(Path(args["folder"]), int(args["chunk_size"]), tick,
                              lambda kind, runs: say("runs", {"kind": kind,
                                                              "runs": [str(r) for r in runs]}))
    except OpsgateError as exc:
        say("error", {"message": str(exc), "kind": type(exc).__name__})
        return 3
    say("done", {"seconds": round(time.monotonic() - t, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
