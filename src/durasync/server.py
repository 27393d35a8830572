"""Assembles the durasync ASGI application.

:func:`create_app` builds one Starlette app from a store and settings:

- ``/v1/stream/<path>``: the Durable Streams protocol
  (:class:`durasync.streams.app.StreamsApp`), with ``/v1/stream/__ds/...``
  routed to the subscription service first (DS §9);
- ``/v1/rendezvous/...``: the peer-to-peer rendezvous service (:mod:`durasync.p2p.server`,
  docs/p2p.md), switched by ``ServerSettings.rendezvous.enabled``;
- ``GET /healthz``: liveness (200 ``{"status": "ok", "live": <open live reads>}``);
- ``GET /readyz``, ``GET /metrics``, the inspector at ``/inspect/`` and its read-only
  ``/v1/inspect/...`` APIs (:mod:`durasync.ops`; docs/operations.md);
- with ``registry_stream``, the ``__registry__`` stream of stream lifecycle events
  (:mod:`durasync.streams.registry`); ``on_stream_created`` / ``on_stream_deleted`` hooks;
- on every response: ``X-Content-Type-Options: nosniff``,
  ``Cross-Origin-Resource-Policy: cross-origin`` and permissive CORS
  (DS §8), and CORS preflights answered before auth.

The lifespan opens the store and starts the subscription service, and on
shutdown ends open long-polls and SSE streams, stops subscriptions and closes
the store. Later layers (rooms) add routes through ``extra_routes``.

Embedding (README.md "Embedding"): a framework runs only the lifespan of
its top-level app, never a mounted one's, so the host app runs durasync's with
:func:`lifespan` from its own, and mounts the app under any prefix.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durasync.auth import Authorizer, JWTAuthorizer, LoopbackAuthorizer
from durasync.browser_bundle import bundle_routes
from durasync.demo import demo_routes
from durasync.httpserver import HttpLimits
from durasync.httpwire import error_body
from durasync.logs import RequestLog
from durasync.metrics import Metrics
from durasync.ops import OpsApi
from durasync.p2p.rendezvous import RendezvousSettings
from durasync.p2p.server import RendezvousService
from durasync.protocol.closecodes import CloseCode
from durasync.replication.config import ReplicationConfig
from durasync.rooms import RoomService, RoomSettings
from durasync.rooms.presence import PresenceBus, RedisPresenceBus
from durasync.store.base import LogStore, StreamInfo
from durasync.store.errors import StoreError
from durasync.streams.app import (
    SECURITY_HEADERS,
    CorsPolicy,
    StreamCreatedHook,
    StreamDeletedHook,
    StreamsApp,
    StreamSettings,
    answer_preflight,
)
from durasync.streams.registry import REGISTRY_PATH, StreamRegistry

__all__ = ["SecurityHeadersMiddleware", "ServerSettings", "create_app", "lifespan"]

log = logging.getLogger("durasync.server")


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything :func:`create_app` needs besides the store."""

    streams: StreamSettings = StreamSettings()
    #: HS256 secret: switches auth to JWT bearer tokens (see durasync.auth).
    auth_secret: str | None = None
    #: Without a secret, admit non-loopback clients (trusted networks only).
    allow_remote: bool = False
    #: Serve the reserved ``__ds`` subscription APIs (DS §9).
    subscriptions: bool = True
    #: Rooms (WebSocket ``/v1/rooms/{room}`` and its HTTP views); see durasync.rooms.
    rooms: RoomSettings = RoomSettings()
    #: Bounds of the HTTP connection layer; applied by the server that runs the app
    #: (``durasync serve`` passes them to uvicorn through durasync.httpserver), not by the
    #: ASGI app itself.
    http: HttpLimits = HttpLimits()
    #: ``redis://`` URL when the store is Redis (several nodes share it): rooms share presence
    #: and live delivery through it. ``None`` on one node.
    redis_url: str | None = None
    #: The rendezvous service for peer-to-peer connections (``/v1/rendezvous``, docs/p2p.md).
    rendezvous: RendezvousSettings = RendezvousSettings()
    #: Serve ``GET /metrics`` and count (off: every counter is a no-op).
    metrics: bool = True
    #: Keep the publicly readable ``__registry__`` stream of stream creations and deletions.
    registry_stream: bool = False
    #: Replication links to other servers (``serve --replicate FILE``; durasync.replication).
    #: The peer API other servers' links use is served either way.
    replication: ReplicationConfig | None = None


_SECURITY_HEADERS: list[tuple[bytes, bytes]] = list(SECURITY_HEADERS)


class SecurityHeadersMiddleware:
    """Adds DS §8 security and CORS headers to every HTTP response.

    CORS preflights (``OPTIONS`` with ``Access-Control-Request-Method``) are
    answered here, before authentication, as browsers send no credentials.
    """

    def __init__(self, app: ASGIApp, cors: CorsPolicy | None = None) -> None:
        self.app = app
        self.cors = cors or CorsPolicy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self.cors.wrap(scope, send)
        if await answer_preflight(scope, send):
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                # Sub-apps (e.g. subscriptions) may set some already: no duplicates.
                headers.extend(h for h in _SECURITY_HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def make_authorizer(settings: ServerSettings) -> Authorizer:
    """The authorizer the settings ask for (JWT with a secret, else loopback)."""
    if settings.auth_secret:
        return JWTAuthorizer(settings.auth_secret)
    return LoopbackAuthorizer(allow_remote=settings.allow_remote)


async def _healthz(request: Request) -> Response:
    """Liveness: 200 with the number of open long-poll/SSE requests (streams and rendezvous)."""
    state = request.app.state
    live = state.streams.live_requests + state.rendezvous.live_requests
    return Response(f'{{"status":"ok","live":{live}}}'.encode(), media_type="application/json")


async def _server_error(request: Request, exc: Exception) -> Response:
    """Last resort: a genuine server fault. Logged; the client sees no traceback."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    headers = {name.decode(): value.decode() for name, value in _SECURITY_HEADERS}
    cors: CorsPolicy = request.app.state.cors
    if not cors.any_origin:
        # This answer bypasses the middleware: apply the allowed origins here.
        del headers["access-control-allow-origin"]
        headers["vary"] = "Origin"
        allowed = cors.allowed(request.scope)
        if allowed is not None:
            headers["access-control-allow-origin"] = allowed.decode("latin-1")
    return Response(
        error_body("INTERNAL_ERROR", "internal server error"),
        status_code=500,
        media_type="application/json",
        headers=headers,
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    return Response(
        error_body("NOT_FOUND", f"no route for {request.url.path}"),
        status_code=404,
        media_type="application/json",
    )


def _no_route(http_default: ASGIApp) -> ASGIApp:
    """The router's answer when no route matches: HTTP as before (404 through the exception
    handler); a WebSocket handshake gets an HTTP 404 with a JSON body where the server supports
    the WebSocket Denial Response extension (uvicorn does), else a close (1008 would read as an
    auth failure, and Starlette's default close becomes a bare 403 at the handshake)."""

    async def no_route(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await http_default(scope, receive, send)
            return
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            await send(
                {"type": "websocket.close", "code": CloseCode.NORMAL, "reason": "no endpoint"}
            )
            return
        path = scope.get("path", "")
        body = error_body("NOT_FOUND", f"no WebSocket endpoint at {path}")
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "websocket.http.response.start", "status": 404, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})

    return no_route


class _StreamsFirstApp(Starlette):
    """Starlette app that hands ``{prefix}/...`` HTTP requests straight to
    :class:`StreamsApp`, bypassing the router and the middleware stack.

    Why: every ``send`` wrapper (Starlette's error/exception middlewares,
    :class:`SecurityHeadersMiddleware`) costs on each long-poll/SSE delivery
    and append, about a third of the server's busy time on a live tail.
    :class:`StreamsApp` adds the DS §8 headers, answers CORS preflights and
    turns unexpected errors into an opaque 500 itself, so its responses are
    the same either way. Everything else (``/healthz``, rooms, websockets,
    lifespan) goes through Starlette as before.
    """

    def __init__(self, *, streams: StreamsApp, stream_prefix: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._streams_app = streams
        #: ``{prefix}/``; empty (no shortcut) when streams sit at the root, so
        #: ``/healthz`` and the other routes still win there.
        self._stream_prefix = stream_prefix if stream_prefix != "/" else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self._stream_prefix
            and scope["type"] == "http"
            and scope["path"].startswith(self._stream_prefix)
            and not scope.get("root_path")
        ):
            scope["app"] = self
            await self._streams_app(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, self._startup_reporter(send))
            return
        await super().__call__(scope, receive, send)

    def _startup_reporter(self, send: Send) -> Send:
        """A store that cannot open (Redis down, data dir locked) is the operator's problem to
        fix, not a bug: report it as one line instead of Starlette's traceback."""

        async def reporting_send(message: Message) -> None:
            exc = getattr(self.state, "store_open_error", None)
            if message["type"] == "lifespan.startup.failed" and exc is not None:
                message = {**message, "message": f"durasync: cannot open the store: {exc}"}
            await send(message)

        return reporting_send


def lifespan(app: Starlette) -> contextlib.AbstractAsyncContextManager[None]:
    """The lifespan of ``app`` (built by :func:`create_app`) as an async context manager, for
    an app that mounts it: entering opens the store and starts rooms and subscriptions, leaving
    ends live reads and closes everything. Starlette and FastAPI run only the top-level app's
    lifespan, so call this from the host app's own::

        sync = create_app(EmbeddedStore("./data"))

        @contextlib.asynccontextmanager
        async def host_lifespan(host):
            async with durasync.server.lifespan(sync):
                yield

        host = FastAPI(lifespan=host_lifespan)  # or Starlette(lifespan=...)
        host.mount("/sync", sync)

    Raises:
        StoreError: the store cannot be opened (on entering).
    """
    # create_app's lifespan yields None (no state mapping).
    return cast(contextlib.AbstractAsyncContextManager[None], app.router.lifespan_context(app))


def create_app(
    store: LogStore,
    settings: ServerSettings | None = None,
    *,
    authorizer: Authorizer | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    on_stream_created: StreamCreatedHook | None = None,
    on_stream_deleted: StreamDeletedHook | None = None,
) -> Starlette:
    """Build the ASGI app over ``store`` (not yet opened: the lifespan opens it).

    Call ``app.state.begin_shutdown()`` (no arguments, returns ``None``) when the server starts
    draining (the CLI does so on SIGTERM): it ends the open long-polls and SSE streams of the
    streams API, of the rendezvous and of the replication API (live peer reads, events) at
    once, so they do not hold the graceful shutdown until their timeouts, and live requests
    that arrive later end at once. The lifespan calls it too before it closes the store.
    ``app.state.streams`` is the :class:`StreamsApp`, ``app.state.rendezvous`` the
    :class:`RendezvousService`, ``app.state.replication`` the replication service.

    ``on_stream_created(path, info)`` / ``on_stream_deleted(path)`` are awaited after a
    stream was created (PUT answered 201) or deleted (DELETE answered 204) through the
    streams API, before the answer is sent, once per creation on whichever node served it;
    an exception from a hook is logged and does not change the answer. With
    ``settings.registry_stream`` the registry's hooks run first.

    ``app.state.metrics`` is the :class:`~durasync.metrics.Metrics`, ``app.state.request_log``
    the request observer to give the HTTP layer (``bounded_protocol(..., observer=...)``) for
    per-request metrics and access lines.
    """
    settings = settings or ServerSettings()
    auth = authorizer or make_authorizer(settings)
    metrics = Metrics(enabled=settings.metrics)
    if metrics.enabled:
        store.observer = metrics
    stream_settings = settings.streams
    registry: StreamRegistry | None = None
    if settings.registry_stream:
        registry = StreamRegistry(store)
        stream_settings = msgspec.structs.replace(
            stream_settings, public_reserved=stream_settings.public_reserved | {REGISTRY_PATH}
        )
        on_stream_created = _chain_created(registry.created, on_stream_created)
        on_stream_deleted = _chain_deleted(registry.deleted, on_stream_deleted)
    if settings.auth_secret and stream_settings.cache_scope == "public":
        # Token-protected reads are user-specific: never in shared caches (DS §7).
        stream_settings = msgspec.structs.replace(stream_settings, cache_scope="private")
    subscriptions: Any | None = None
    if settings.subscriptions:
        from durasync.streams.subscriptions import SubscriptionService

        subscriptions = SubscriptionService(store, stream_prefix=stream_settings.prefix)
    from durasync.replication.api import replication_routes
    from durasync.replication.rooms import ServiceRoomPort
    from durasync.replication.service import ReplicationService

    replication = ReplicationService(store, settings.replication)
    streams = StreamsApp(
        store,
        stream_settings,
        authorizer=auth,
        subscriptions=subscriptions,
        metrics=metrics,
        on_created=on_stream_created,
        on_deleted=on_stream_deleted,
        write_guard=replication.mirror_reason,
    )
    presence: PresenceBus | None = None
    if settings.redis_url:
        # Several nodes: room presence is shared (and expires) through Redis.
        presence = RedisPresenceBus(settings.redis_url, settings.rooms.presence_timeout)
    rooms = RoomService(
        store,
        settings.rooms,
        authorizer=auth,
        stream_settings=stream_settings,
        presence=presence,
        replicated=replication.room_replicated,
        metrics=metrics,
    )
    request_log = RequestLog(metrics, stream_settings.prefix)
    rooms.request_log = request_log
    if metrics.enabled:
        metrics.watch_streams(lambda: streams.live_counts()[0], lambda: streams.live_counts()[1])
        metrics.watch_replication(replication.links_summary)
    ops = OpsApi(
        store=store,
        streams=streams,
        rooms=rooms,
        authorizer=auth,
        metrics=metrics,
        public_reserved=stream_settings.public_reserved,
        redis_url=settings.redis_url,
        replication_links=replication.links_summary,
    )
    replication.rooms = ServiceRoomPort(rooms, replication.room_indexes)
    rendezvous = RendezvousService(store, settings.rendezvous, authorizer=auth)
    # What draining ends: every layer that holds live HTTP requests (long-polls, SSE) open.
    drain_hooks: list[Callable[[], None]] = [
        streams.begin_shutdown,
        rendezvous.begin_shutdown,
        replication.begin_shutdown,
    ]

    def begin_shutdown() -> None:
        """End every open live request of every layer now; new ones end at once."""
        for hook in drain_hooks:
            hook()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await store.open()
        except StoreError as exc:
            app.state.store_open_error = exc
            raise
        log.info("store opened (%s)", store.name, extra={"event": "store_opened"})
        if registry is not None:
            try:
                await registry.open()
            except StoreError as exc:
                app.state.store_open_error = exc
                await store.close()
                raise
        if subscriptions is not None:
            await subscriptions.start()
        await rooms.start()
        if settings.rendezvous.enabled:
            await rendezvous.start()
        await replication.start()
        try:
            yield
        finally:
            log.info("shutting down", extra={"event": "shutdown"})
            begin_shutdown()
            await rendezvous.aclose()
            try:
                await replication.aclose()
            except Exception:
                log.exception("closing replication failed")
            try:
                await rooms.aclose()
            except Exception:
                log.exception("closing rooms failed")
            if subscriptions is not None:
                try:
                    await subscriptions.aclose()
                except Exception:
                    log.exception("closing subscriptions failed")
            await store.close()

    prefix = stream_settings.prefix.rstrip("/")
    routes: list[BaseRoute] = [
        Route("/healthz", _healthz, methods=["GET"]),
        *ops.routes(),
        Route(prefix + "/{path:path}", streams),
        *rooms.routes(),
        *bundle_routes(),
        *demo_routes(),
        *(rendezvous.routes() if settings.rendezvous.enabled else ()),
        *replication_routes(replication, auth),
        *extra_routes,
    ]
    app = _StreamsFirstApp(
        streams=streams,
        stream_prefix=prefix + "/",
        routes=routes,
        middleware=[Middleware(SecurityHeadersMiddleware, cors=streams.cors)],
        exception_handlers={500: _server_error, 404: _not_found},
        lifespan=lifespan,
    )
    app.state.begin_shutdown = begin_shutdown
    app.router.default = _no_route(app.router.default)
    app.state.streams = streams
    app.state.rendezvous = rendezvous
    app.state.store = store
    app.state.subscriptions = subscriptions
    app.state.rooms = rooms
    app.state.cors = streams.cors
    app.state.metrics = metrics
    app.state.request_log = request_log
    app.state.replication = replication
    return app


def _chain_created(first: StreamCreatedHook, then: StreamCreatedHook | None) -> StreamCreatedHook:
    if then is None:
        return first

    async def both(path: str, info: StreamInfo) -> None:
        try:
            await first(path, info)
        finally:
            await then(path, info)

    return both


def _chain_deleted(first: StreamDeletedHook, then: StreamDeletedHook | None) -> StreamDeletedHook:
    if then is None:
        return first

    async def both(path: str) -> None:
        try:
            await first(path)
        finally:
            await then(path)

    return both
