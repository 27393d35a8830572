"""Operating a server: metrics, readiness, the inspector page and its read-only JSON APIs.

Routes (mounted by :func:`durasync.server.create_app`; docs/operations.md):

- ``GET /metrics``: Prometheus text exposition (:mod:`durasync.metrics`); 404 when metrics
  are off. Not authenticated (like ``/healthz``): scrape it from the operator's network.
- ``GET /readyz``: 200 ``{"status": "ready"}``; 503 ``{"status": "shutting_down"}`` once the
  server drains, 503 ``{"status": "store_unavailable"}`` while the store is unreachable
  (Redis down). ``/healthz`` stays the liveness check.
- ``GET /inspect/`` (and ``/inspect/inspector.js``): the read-only inspector page, static
  files shipped in the package. It calls only the public APIs below and the streams/rooms
  APIs, with the token the user gives it (kept in the page's session storage).
- ``GET /v1/inspect/node``: version, uptime, store kind and availability, Redis URL (password
  redacted) when shared, and the replication links (name, remote URL, status, connectivity,
  lag, dead letters; never a link's token).
- ``GET /v1/inspect/streams[?prefix=P&limit=N]``: streams with metadata, only those the
  caller may read (``stream/<path>`` read rights); server-internal streams are left out
  except the publicly readable ones (``__registry__``). ``limit`` 1-1000 (default 200).
- ``GET /v1/inspect/rooms/{room}``: one room's members and presence, ``serverSeq``,
  epoch, snapshot position and journal size (``room/<name>`` read rights).

Every ``/v1/inspect`` route authenticates like the rest of the API (``Authorization:
Bearer`` or ``?token=``): with ``--auth-secret`` a request without a valid token gets 401 and
sees nothing; a token sees only what its claims allow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from durasync import __version__
from durasync.auth import AuthError, Authorizer, Principal, credentials_from_scope
from durasync.httpwire import error_body
from durasync.namespaces import ReservedAccess
from durasync.protocol.room_rules import room_name_problem
from durasync.store.base import StreamInfo
from durasync.store.errors import NoSuchStream, StoreError

if TYPE_CHECKING:
    from durasync.metrics import Metrics
    from durasync.rooms import RoomService
    from durasync.store.base import LogStore
    from durasync.streams.app import StreamsApp

__all__ = ["INSPECTOR_DIR", "OpsApi"]

#: The inspector's static files, inside the package.
INSPECTOR_DIR: Final = Path(__file__).parent / "inspector"
_STATIC: Final = {
    "index.html": "text/html; charset=utf-8",
    "inspector.js": "text/javascript; charset=utf-8",
}
#: Streams scanned per listing (before filtering by rights and reserved paths).
_SCAN_LIMIT: Final = 10_000
_NO_STORE: Final = {"Cache-Control": "no-store"}


def _json(value: Any, status: int = 200) -> Response:
    return Response(
        msgspec.json.encode(value), status, media_type="application/json", headers=_NO_STORE
    )


def _error(status: int, code: str, message: str) -> Response:
    return Response(error_body(code, message), status, media_type="application/json")


def stream_summary(info: StreamInfo) -> dict[str, Any]:
    """The inspector's view of one stream's metadata."""
    config = info.config
    return {
        "path": info.path,
        "contentType": config.content_type,
        "messages": info.message_count,
        "bytes": info.byte_count,
        "tail": info.tail,
        "start": info.start,
        "closed": info.closed,
        "ttlSeconds": config.ttl_seconds,
        "expiresAt": config.expires_at_text,
        "forkedFrom": config.forked_from,
        "createdAt": info.created_at,
        "touchedAt": info.touched_at,
    }


def _link_view(link: dict[str, Any]) -> dict[str, Any]:
    """A replication link as the node view shows it: an explicit set of keys (a summary
    never holds the token; this keeps it so if the summary grows)."""
    return {
        "name": link["name"],
        "remote": link["remote"],
        "status": link["status"],
        "connectivity": link["connectivity"],
        "lag": {
            "messages": link["lag"]["messages"],
            "seconds": round(link["lag"]["seconds"], 3),
        },
        "deadLetters": link["deadLetters"],
    }


class OpsApi:
    """The routes of this module over one app's parts (see the module docstring)."""

    def __init__(
        self,
        *,
        store: LogStore,
        streams: StreamsApp,
        rooms: RoomService,
        authorizer: Authorizer,
        metrics: Metrics,
        public_reserved: frozenset[str] = frozenset(),
        redis_url: str | None = None,
        replication_links: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.store = store
        self.streams = streams
        self.rooms = rooms
        self.authorizer = authorizer
        self.metrics = metrics
        self.reserved = ReservedAccess(public_reserved)
        self.redis_url = redis_url
        self.replication_links = replication_links
        self.started = time.time()

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/inspect", self.inspect_redirect, methods=["GET"]),
            Route("/inspect/", self.inspect_file, methods=["GET"]),
            Route("/inspect/{name}", self.inspect_file, methods=["GET"]),
            Route("/v1/inspect/node", self.node, methods=["GET"]),
            Route("/v1/inspect/streams", self.list_streams, methods=["GET"]),
            Route("/v1/inspect/rooms/{room}", self.room, methods=["GET"]),
        ]
        if self.metrics.enabled:
            routes.append(Route("/metrics", self.scrape, methods=["GET"]))
        return routes

    # -- metrics and readiness ------------------------------------------------------------

    async def scrape(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(body, media_type=content_type, headers=_NO_STORE)

    async def readyz(self, request: Request) -> Response:
        if self.streams.closing:
            return _json({"status": "shutting_down"}, 503)
        if not self.store.available:
            return _json({"status": "store_unavailable"}, 503)
        return _json({"status": "ready"})

    # -- the page ---------------------------------------------------------------------------

    async def inspect_redirect(self, request: Request) -> Response:
        return RedirectResponse("/inspect/", status_code=308)

    async def inspect_file(self, request: Request) -> Response:
        name = request.path_params.get("name") or "index.html"
        media_type = _STATIC.get(name)
        if media_type is None:
            return _error(404, "NOT_FOUND", f"no file /inspect/{name}")
        body = (INSPECTOR_DIR / name).read_bytes()
        return Response(
            body,
            media_type=media_type,
            headers={
                "Cache-Control": "no-cache",
                # Own scripts only; it talks to this server only.
                "Content-Security-Policy": (
                    "default-src 'none'; script-src 'self'; connect-src 'self'; "
                    "style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"
                ),
            },
        )

    # -- JSON APIs --------------------------------------------------------------------------

    def _principal(self, request: Request) -> Principal:
        return self.authorizer.authenticate(credentials_from_scope(request.scope))

    async def node(self, request: Request) -> Response:
        try:
            self._principal(request)
        except AuthError as exc:
            return _error(exc.status, exc.code, exc.message)
        out: dict[str, Any] = {
            "version": __version__,
            "uptimeSeconds": round(time.time() - self.started, 3),
            "store": self.store.name,
            "shared": self.store.shared,
            "storeAvailable": self.store.available,
            "ready": self.store.available and not self.streams.closing,
            "liveRequests": self.streams.live_requests,
            "roomsLoaded": len(self.rooms.rooms),
            "metrics": self.metrics.enabled,
            "replicationLinks": [_link_view(link) for link in (self.replication_links or list)()],
        }
        if self.redis_url is not None:
            from durasync.store.redis import redact_url

            out["redis"] = {"url": redact_url(self.redis_url)}
        return _json(out)

    async def list_streams(self, request: Request) -> Response:
        try:
            principal = self._principal(request)
        except AuthError as exc:
            return _error(exc.status, exc.code, exc.message)
        prefix = request.query_params.get("prefix", "")
        limit_text = request.query_params.get("limit", "200")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            return _error(400, "INVALID_LIMIT", "limit must be an integer from 1 to 1000")
        if len(prefix) > 1024:
            return _error(400, "INVALID_PREFIX", "prefix must be at most 1024 characters")
        limit = int(limit_text)
        try:
            infos = await self.store.list_streams(prefix, limit=_SCAN_LIMIT)
        except StoreError as exc:
            return _error(503, "STORE_UNAVAILABLE", str(exc))
        out: list[dict[str, Any]] = []
        truncated = len(infos) >= _SCAN_LIMIT
        for info in infos:
            if info.soft_deleted or self.reserved.hidden(info.path):
                continue
            if not self.authorizer.authorize(principal, "read", "stream/" + info.path):
                continue
            if len(out) == limit:
                truncated = True  # one more readable stream than asked for
                break
            out.append(stream_summary(info))
        return _json({"streams": out, "truncated": truncated})

    async def room(self, request: Request) -> Response:
        name = request.path_params["room"]
        try:
            principal = self._principal(request)
            if not self.authorizer.authorize(principal, "read", "room/" + name):
                raise AuthError(403, "FORBIDDEN", f"not allowed to read room/{name}")
        except AuthError as exc:
            return _error(exc.status, exc.code, exc.message)
        problem = room_name_problem(name)
        if problem is not None:
            return _error(400, "BAD_ROOM", problem)
        from durasync.rooms.errors import RoomFailed
        from durasync.rooms.room import journal_path

        try:
            room = await self.rooms.get_room(name, create=False)
            journal = await self.store.head(journal_path(name))
        except NoSuchStream:
            return _error(404, "ROOM_NOT_FOUND", f"no room {name!r}")
        except (StoreError, RoomFailed) as exc:
            return _error(503, "STORE_UNAVAILABLE", str(exc))
        members = sorted(
            ({"client": m.client, "format": m.fmt} for m in room.members),
            key=lambda m: m["client"],
        )
        return _json(
            {
                "room": name,
                "serverSeq": room.last_seq,
                "epoch": room.epoch,
                "members": members,
                "presence": room.presence.members(),
                "snapshot": {"seq": room.snap.seq, "journalOffset": room.snap.journal_offset},
                "firstAvailable": room.first_available(),
                "journal": {
                    "messages": journal.message_count,
                    "bytes": journal.byte_count,
                    "tail": journal.tail,
                },
            }
        )
