"""The reference deployment the sandbox serves: the web app's public and admin API,
built from the database at request time, as the app serves them (paths and shapes:
``fixtures/contracts/``, docs/checks.md).

It also carries the sandbox's fault switches (`Faults`), so the self-tests can make the
API lie in one precise way and prove that exactly the intended check goes red.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from opsgate.clients import kb
from opsgate.clients.schema import OVERVIEW_COUNTS
from opsgate.sandbox.admin_backend import AdminBackend
from opsgate.sensitive import Secret

SESSION_COOKIE = "opsgate_admin_session"

#: Fault names the sandbox understands (tests and ``opsgate sandbox up --fault``).
FAULTS = (
    "api-missing-node", "api-extra-edge", "api-dangling-edge", "api-domain-renamed",
    "api-build-as-note", "overview-count-off-by-one", "api-500", "api-html", "api-hang",
    "api-login-redirect", "site-404", "blob-500", "blob-hang", "api-bad-node-deep",
    # the Vercel REST API's (opsgate.sandbox.vercel_api)
    "vercel-wrong-project", "vercel-backend-blob", "vercel-backend-sensitive",
    "vercel-preview-backend-blob", "vercel-no-database-url", "vercel-deploy-error",
    "vercel-deploy-building", "vercel-429", "vercel-503",
    # its redeploys' (opsgate.sandbox.vercel_deploys)
    "vercel-redeploy-error", "vercel-redeploy-stuck", "vercel-alias-stuck",
    "vercel-redeploy-stale-env",
)


@dataclass
class Faults:
    active: set[str] = field(default_factory=set)
    hang_seconds: float = 30.0
    blob_page_limit: int = 1000
    #: Requests served per path, and blob listings as "blob list" (never reset): lets a
    #: self-test prove a check fetched the API, or listed the store, once per run, not
    #: once per test.
    served: Counter[str] = field(default_factory=Counter)
    #: Counts the calls of `set`: a fault that acts once per switching on
    #: (``vercel-429``) knows by it that it was switched on again.
    switched: int = 0

    def set(self, *names: str) -> None:
        unknown = [n for n in names if n not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)}")
        self.active = set(names)
        self.switched += 1

    def clear(self) -> None:
        self.active = set()
        self.hang_seconds = 30.0
        self.blob_page_limit = 1000


#: Faults that rewrite the answer's content: their answer is built whole, in memory.
_REWRITING = frozenset({"api-missing-node", "api-extra-edge", "api-dangling-edge",
                        "api-domain-renamed", "api-bad-node-deep", "api-build-as-note"})
#: Nodes or edges per piece of a streamed answer.
_PIECE = 2000


def _generated_at(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute("SELECT max(finished_at) FROM kb_provenance_runs "
                       "WHERE status = 'succeeded'").fetchone()
    return row[0].isoformat() if row and row[0] else None


def _streamed_constellation(connect: Callable[[], psycopg.Connection[Any]]
                            ) -> Iterator[bytes]:
    """The answer as a real deployment sends a large one: in pieces as it reads them,
    one snapshot for the whole answer, counts in the metadata at the end. A client's
    read time-out is then the time between two pieces, not the time to build the whole
    answer (about 1 GB at 1M entities, which does not start within 15 s)."""
    with connect() as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        yield from _pieces(conn)


def _pieces(conn: psycopg.Connection[Any]) -> Iterator[bytes]:
    with conn.transaction():
        found, generated = kb.domains(conn), _generated_at(conn)
        counts = {"nodes": 0, "edges": 0, "build": 0, "notes": 0}

        def node_counted(node: dict[str, Any]) -> None:
            counts["nodes"] += 1
            counts["build"] += node["type"] == "build"
            counts["notes"] += node["type"] == "note"

        def edge_counted(edge: dict[str, Any]) -> None:
            counts["edges"] += 1

        # Streams closed before the transaction ends (`kb.rows`): a client that goes
        # away mid-body leaves them at their yield, holding the connection's lock.
        yield b'{"nodes":['
        with closing(kb.iter_nodes(conn)) as nodes:
            yield from _json_items(nodes, node_counted)
        yield b'],"edges":['
        with closing(kb.iter_edges(conn)) as edges:
            yield from _json_items(edges, edge_counted)
        yield b'],"metadata":' + orjson.dumps(
            {"domains": found, "counts": counts, "source": "kb",
             "generatedAt": generated}) + b"}"


def _json_items(items: Iterator[dict[str, Any]], seen: Callable[[dict[str, Any]], None]
                ) -> Iterator[bytes]:
    """The items of a JSON array, comma-separated, `_PIECE` at a time."""
    piece: list[bytes] = []
    first = True
    for item in items:
        seen(item)
        piece.append(orjson.dumps(item))
        if len(piece) == _PIECE:
            yield (b"" if first else b",") + b",".join(piece)
            first, piece = False, []
    if piece:
        yield (b"" if first else b",") + b",".join(piece)


def _constellation(conn: psycopg.Connection[Any], faults: Faults) -> dict[str, Any]:
    graph = kb.read_graph(conn)
    nodes, edges, domains = graph["nodes"], graph["edges"], graph["domains"]
    generated = _generated_at(conn)
    if "api-missing-node" in faults.active and nodes:
        removed = nodes.pop(len(nodes) // 2)["id"]
        edges = [e for e in edges if removed not in (e["source"], e["target"])]
    if "api-extra-edge" in faults.active and len(nodes) > 1:
        edges.append({"source": nodes[0]["id"], "target": nodes[-1]["id"],
                      "relation": "injected-extra", "weight": 1.0})
    if "api-dangling-edge" in faults.active and nodes:
        edges.append({"source": nodes[0]["id"], "target": "ghost-node-404",
                      "relation": "relates-to", "weight": 0.5})
    if "api-domain-renamed" in faults.active and domains:
        old = domains[0]
        domains = sorted(["renamed-" + old if d == old else d for d in domains])
        for n in nodes:
            if n["domain"] == old:
                n["domain"] = "renamed-" + old
    if "api-bad-node-deep" in faults.active and nodes:
        # One node near the end breaks the contract (a media hash that is no hash).
        deep = nodes[len(nodes) - 1 - len(nodes) // 50]
        deep["media"] = [*deep["media"], {"url": "/m/bad.png", "mime": "image/png",
                                          "bytes": 1, "sha256": "not-a-sha256",
                                          "derivatives": []}]
    if "api-build-as-note" in faults.active:
        for n in nodes:
            if n["type"] == "build":
                n["type"] = "note"
                break
    counts = {
        "nodes": len(nodes),
        "edges": len(edges),
        "build": sum(1 for n in nodes if n["type"] == "build"),
        "notes": sum(1 for n in nodes if n["type"] == "note"),
    }
    return {"nodes": nodes, "edges": edges,
            "metadata": {"domains": domains, "counts": counts, "source": "kb",
                         "generatedAt": generated}}


@dataclass
class _ReferenceApi:
    """What the reference app's routes share: the database, the admin password and
    sessions, the admin backend and the fault switches."""

    database_url: Secret
    admin_password: Secret
    faults: Faults
    admin: AdminBackend | None
    sessions: set[str] = field(default_factory=set)

    def connect(self) -> psycopg.Connection[Any]:
        # Like the real app behind Neon's pooler: no prepared statements.
        return psycopg.connect(self.database_url.reveal(), connect_timeout=5,
                               prepare_threshold=None)

    def misbehave(self) -> Response | None:
        faults = self.faults
        if "api-login-redirect" in faults.active:
            # What a deployment behind a login wall (Vercel's protection) answers.
            return RedirectResponse("/login?next=/api/constellation", status_code=302)
        if "api-500" in faults.active:
            return JSONResponse({"error": "internal"}, status_code=500)
        if "api-html" in faults.active:
            return HTMLResponse("<!doctype html><html><body>Deployment paused</body></html>")
        if "api-hang" in faults.active:
            time.sleep(faults.hang_seconds)
        return None


def _home(api: _ReferenceApi, request: Request) -> Response:
    if "site-404" in api.faults.active:
        return HTMLResponse("<!doctype html><h1>404: NOT_FOUND</h1>", status_code=404)
    return HTMLResponse("<!doctype html><title>constellation</title><h1>ok</h1>")


def _constellation_route(api: _ReferenceApi, request: Request) -> Response:
    api.faults.served[request.url.path] += 1
    bad = api.misbehave()
    if bad is not None:
        return bad
    if not api.faults.active & _REWRITING:
        return StreamingResponse(_streamed_constellation(api.connect),
                                 media_type="application/json")
    with api.connect() as conn:
        return JSONResponse(_constellation(conn, api.faults))


async def _session(api: _ReferenceApi, request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "expected JSON"}, status_code=400)
    given = body.get("password") if isinstance(body, dict) else None
    if not isinstance(given, str) or not hmac.compare_digest(
        given.encode(), api.admin_password.reveal().encode()
    ):
        return JSONResponse({"error": "invalid password"}, status_code=401)
    token = secrets.token_urlsafe(24)
    api.sessions.add(token)
    resp = JSONResponse({"ok": True})
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict")
    return resp


def _overview(api: _ReferenceApi, request: Request) -> Response:
    if request.cookies.get(SESSION_COOKIE) not in api.sessions:
        return JSONResponse({"error": "unauthorized"}, status_code=401)
    bad = api.misbehave()
    if bad is not None:
        return bad
    with api.connect() as conn:
        counts = {}
        for label, table in OVERVIEW_COUNTS:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[label] = int(row[0]) if row else 0
    admin = api.admin
    backend = admin.name() if admin is not None else "neon"
    if admin is not None and backend == "blob":
        counts["admin_content_state"], counts["admin_history"] = admin.blob_counts()
    if "overview-count-off-by-one" in api.faults.active:
        counts["admin_history"] += 1
    return JSONResponse({"backend": backend, "counts": counts})


def create_app(database_url: Secret, admin_password: Secret, faults: Faults | None = None,
               admin: AdminBackend | None = None) -> Starlette:
    """The ASGI app. Each request opens its own short connection (as a serverless
    function would), so the API always reflects the database at request time.
    ``admin``: where admin state lives, per the serving deployment (default: Postgres);
    the overview reports it and ``PUT /api/admin/content/{key}`` saves there. The
    routes are module-level functions bound to the app's state."""
    api = _ReferenceApi(database_url, admin_password, faults or Faults(), admin)
    return Starlette(routes=[
        Route("/", partial(_home, api)),
        Route("/api/constellation", partial(_constellation_route, api)),
        Route("/api/admin/session", partial(_session, api), methods=["POST"]),
        Route("/api/admin/overview", partial(_overview, api)),
        Route("/api/admin/content/{key}", _save_handler(admin, api.sessions, api.connect),
              methods=["PUT"]),
    ])


def _save_handler(admin: AdminBackend | None, sessions: set[str],
                  connect: Callable[[], psycopg.Connection[Any]]
                  ) -> Callable[[Request], Awaitable[Response]]:
    """``PUT /api/admin/content/{key}``: an admin save, to the backend the serving
    deployment names."""

    async def save(request: Request) -> Response:
        if request.cookies.get(SESSION_COOKIE) not in sessions:
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "expected JSON"}, status_code=400)
        if not isinstance(body, dict) or "payload" not in body:
            return JSONResponse({"error": "expected {\"payload\": ...}"}, status_code=400)
        key = request.path_params["key"]
        backend = admin.name() if admin is not None else "neon"
        if admin is not None and backend == "blob":
            ident = admin.save_blob(key, body["payload"], "admin")
        else:
            with connect() as conn:
                ident = AdminBackend.save_neon(conn, key, body["payload"], "admin")
        return JSONResponse({"backend": backend, "historyId": ident})

    return save
