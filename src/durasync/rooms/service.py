"""Rooms over ASGI: the WebSocket endpoint, the HTTP views and the room registry.

Routes (mounted by :func:`durasync.server.create_app`):

- ``WS  /v1/rooms/{room}?client=..[&since=..&epoch=..][&format=msgpack|json][&token=..]``
- ``GET /v1/rooms``: rooms in the store with their member counts;
- ``GET /v1/rooms/{room}[?view=live]``: canonical JSON of the graph, ``Room-Server-Seq`` and
  ``Room-Epoch`` headers;
- ``GET|HEAD /v1/rooms/{room}/journal``: the journal stream with Durable Streams read semantics
  (served by a :class:`~durasync.streams.app.StreamsApp`, so catch-up, long-poll and SSE behave
  exactly as on ``/v1/stream``);
- ``DELETE /v1/rooms/{room}`` (write access): removes the room (members closed with 4404);
  ``POST /v1/rooms/{room}/reset`` (write access): empties it under a new epoch (members closed
  with 4008, so they rejoin and reload).

Rooms load lazily on first use and leave memory after ``idle_timeout`` without members.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from durasync.auth import Action, AuthError, Authorizer, Principal, credentials_from_scope
from durasync.httpwire import error_body
from durasync.logs import RequestLog
from durasync.metrics import Metrics
from durasync.protocol.closecodes import CloseCode
from durasync.protocol.room_frames import Format, PingFrame, encode_frame
from durasync.protocol.room_rules import room_name_problem
from durasync.protocol.room_server import (
    ROOM_FAILED,
    Active,
    Commit,
    JoinRefused,
    JoinRequest,
    PresenceSet,
    ServerRoomSession,
    StateWanted,
    parse_join,
)
from durasync.rooms.errors import RoomFailed
from durasync.rooms.presence import LocalPresenceBus, PresenceBus
from durasync.rooms.room import (
    Member,
    Room,
    RoomSettings,
    journal_path,
    meta_path,
    snapshot_path,
)
from durasync.store.base import LogStore
from durasync.store.errors import DataGone, NoSuchStream, StoreError
from durasync.streams.app import StreamsApp, StreamSettings

__all__ = ["RoomService"]

log = logging.getLogger("durasync.rooms")


class _JournalAuthorizer:
    """Maps the journal stream resource onto ``room/<name>`` and allows reads only."""

    def __init__(self, base: Authorizer) -> None:
        self.base = base

    def authenticate(self, credentials: object) -> Principal:
        return self.base.authenticate(credentials)  # type: ignore[arg-type]

    def authorize(self, principal: Principal, action: Action, resource: str) -> bool:
        if action != "read":
            return False
        parts = resource.split("/")
        if len(parts) != 4 or parts[1] != "__rooms":
            return False
        return self.base.authorize(principal, "read", "room/" + parts[2])


async def _never(name: str) -> bool:
    return False


class RoomService:
    """Registry of loaded rooms plus the ASGI endpoints. ``start``/``aclose`` in the lifespan."""

    def __init__(
        self,
        store: LogStore,
        settings: RoomSettings | None = None,
        *,
        authorizer: Authorizer,
        stream_settings: StreamSettings | None = None,
        presence: PresenceBus | None = None,
        metrics: Metrics | None = None,
        replicated: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.store = store
        #: Counters and gauges (no-op when metrics are off or not given).
        self.metrics = metrics or Metrics(enabled=False)
        self.metrics.watch_rooms(
            lambda: len(self.rooms), lambda: sum(len(r.members) for r in self.rooms.values())
        )
        #: Access lines of WebSocket connections (set by create_app).
        self.request_log: RequestLog | None = None
        #: Whether a room is replicated with other servers (then it folds in Lamport order;
        #: asked whenever a room is looked up). Given by the replication service.
        self.replicated: Callable[[str], Awaitable[bool]] = replicated or _never
        self.settings = settings or RoomSettings()
        #: Where presence lives: this process (default) or shared by several nodes (Redis).
        self.presence: PresenceBus = presence or LocalPresenceBus(self.settings.presence_timeout)
        self.authorizer = authorizer
        self.rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Future[Room]] = {}
        #: Rooms being removed (delete or reset): loads wait until it is done.
        self._removing: dict[str, asyncio.Future[None]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False
        # Serves the reserved __rooms/<room>/journal stream, only under /v1/rooms/{room}/journal.
        self.journal_app = StreamsApp(
            store, stream_settings, authorizer=_JournalAuthorizer(authorizer), serve_reserved=True
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/rooms", self._list, methods=["GET"]),
            Route("/v1/rooms/{room}/journal", self._journal, methods=["GET", "HEAD"]),
            Route("/v1/rooms/{room}/reset", self._reset, methods=["POST"]),
            Route("/v1/rooms/{room}", self._view, methods=["GET"]),
            Route("/v1/rooms/{room}", self._delete, methods=["DELETE"]),
            WebSocketRoute("/v1/rooms/{room}", _WsEndpoint(self)),
        ]

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.presence.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def aclose(self) -> None:
        """Drop every member (4008: resume elsewhere/later) and unload every room."""
        self._closing = True
        self.journal_app.begin_shutdown()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for room in list(self.rooms.values()):
            await room.close(CloseCode.RESUME, "server shutting down")
        self.rooms.clear()
        await self.presence.aclose()

    async def get_room(self, name: str, *, create: bool) -> Room:
        """The loaded room ``name``, loading it (lazily) from the store.

        Raises:
            NoSuchStream: the room does not exist and ``create`` is False.
        """
        while (removing := self._removing.get(name)) is not None:
            await asyncio.shield(removing)
        lamport = await self.replicated(name)
        room = self.rooms.get(name)
        if room is not None and not room.failed and room.lamport == lamport:
            return room
        if room is not None:
            # Failed, or its replication changed (the fold order with it): reload. Its
            # members resume elsewhere in time and get a full state (the epoch says the mode).
            self.rooms.pop(name, None)
            await room.close()
        pending = self._loading.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Room] = asyncio.get_running_loop().create_future()
        self._loading[name] = fut
        try:
            room = await Room.load(
                name,
                self.store,
                self.settings,
                create=create,
                presence=self.presence,
                lamport=lamport,
            )
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            self._loading.pop(name, None)
        room.metrics = self.metrics
        self.rooms[name] = room
        log.info(
            "room %s loaded (serverSeq %d)",
            name,
            room.last_seq,
            extra={"event": "room_loaded", "room": name},
        )
        fut.set_result(room)
        return room

    async def remove_room(self, name: str, *, reset: bool = False) -> str | None:
        """Delete room ``name`` from the store (meta, journal, snapshot), first closing its
        members on this node: with 4404 (do not rejoin), or with ``reset`` 4008 and the room is
        created again, empty, under a new epoch (members rejoin and reload). Loads of the room
        wait until this is done. Returns the new epoch (reset) or None.

        Other nodes of a cluster notice on their next journal read: their members are closed
        with 4011 and reconnect (a member with write access then creates the room anew).

        Raises:
            NoSuchStream: there is no such room.
            StoreError: the store failed (the room may be partly deleted; deleting again
                finishes it).
        """
        while (removing := self._removing.get(name)) is not None:
            await asyncio.shield(removing)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._removing[name] = done
        try:
            pending = self._loading.get(name)
            if pending is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pending)
            room = self.rooms.pop(name, None)
            if room is not None:
                if reset:
                    await room.close(CloseCode.RESUME, "room reset: rejoin for the new epoch")
                else:
                    await room.close(CloseCode.ROOM_DELETED, "room deleted")
            found = room is not None
            # Meta first: from then on the room does not exist for any node that loads it.
            for path in (meta_path(name), journal_path(name), snapshot_path(name)):
                try:
                    await self.store.delete(path)
                    found = True
                except (NoSuchStream, DataGone):
                    pass
            if not found:
                raise NoSuchStream(f"no room {name!r}")
        finally:
            del self._removing[name]
            done.set_result(None)
        if not reset:
            return None
        return (await self.get_room(name, create=True)).epoch

    async def _tick(self) -> None:
        """Presence expiry, pings and idle-room eviction, once a second."""
        last_ping = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.settings.presence_timeout / 4))
            now = time.monotonic()
            ping = now - last_ping >= self.settings.ping_interval
            if ping:
                last_ping = now
                ts = int(time.time() * 1000)
                frames = {f: encode_frame(PingFrame(ts), f) for f in ("msgpack", "json")}
            for name, room in list(self.rooms.items()):
                room.expire_presence(now)
                if ping:
                    room.send_all(frames)
                if (
                    not room.members
                    and room.inbox.empty()
                    and now - room.last_active > self.settings.idle_timeout
                ):
                    self.rooms.pop(name, None)
                    await room.close()
                    log.info(
                        "room %s evicted (idle)",
                        name,
                        extra={"event": "room_evicted", "room": name},
                    )

    # ------------------------------------------------------------------ HTTP views

    def _principal(self, scope: Scope) -> Principal:
        return self.authorizer.authenticate(credentials_from_scope(scope))

    async def _view(self, request: object) -> object:
        from starlette.requests import Request
        from starlette.responses import Response

        assert isinstance(request, Request)
        name = request.path_params["room"]
        try:
            principal = self._principal(request.scope)
            if not self.authorizer.authorize(principal, "read", "room/" + name):
                raise AuthError(403, "FORBIDDEN", f"not allowed to read room/{name}")
        except AuthError as exc:
            return _json_error(exc.status, exc.code, exc.message)
        problem = room_name_problem(name)
        if problem is not None:
            return _json_error(400, "BAD_ROOM", problem)
        view = request.query_params.get("view", "full")
        if view not in ("full", "live"):
            return _json_error(400, "BAD_VIEW", "view must be 'full' or 'live'")
        try:
            room = await self.get_room(name, create=False)
            # Read-your-writes across nodes: include everything acknowledged by any node
            # before this request, not only what our follower has applied so far.
            await room.catch_up()
        except NoSuchStream:
            return _json_error(404, "ROOM_NOT_FOUND", f"no room {name!r}")
        except (StoreError, RoomFailed) as exc:
            return _json_error(503, "STORE_UNAVAILABLE", str(exc))
        body = room.replica.dump(live=view == "live")
        return Response(
            body.encode(),
            media_type="application/json",
            headers={
                "Room-Server-Seq": str(room.last_seq),
                "Room-Epoch": room.epoch,
                "Cache-Control": "no-store",
            },
        )

    async def _delete(self, request: object) -> object:
        return await self._remove(request, reset=False)

    async def _reset(self, request: object) -> object:
        return await self._remove(request, reset=True)

    async def _remove(self, request: object, *, reset: bool) -> object:
        from starlette.requests import Request
        from starlette.responses import Response

        assert isinstance(request, Request)
        name = request.path_params["room"]
        try:
            principal = self._principal(request.scope)
            if not self.authorizer.authorize(principal, "write", "room/" + name):
                raise AuthError(403, "FORBIDDEN", f"not allowed to write room/{name}")
        except AuthError as exc:
            return _json_error(exc.status, exc.code, exc.message)
        problem = room_name_problem(name)
        if problem is not None:
            return _json_error(400, "BAD_ROOM", problem)
        try:
            epoch = await self.remove_room(name, reset=reset)
        except NoSuchStream:
            return _json_error(404, "ROOM_NOT_FOUND", f"no room {name!r}")
        except (StoreError, RoomFailed) as exc:
            return _json_error(503, "STORE_UNAVAILABLE", str(exc))
        if epoch is None:
            return Response(status_code=204, headers={"Cache-Control": "no-store"})
        return Response(
            msgspec.json.encode({"room": name, "epoch": epoch}),
            media_type="application/json",
            headers={"Room-Epoch": epoch, "Cache-Control": "no-store"},
        )

    async def _list(self, request: object) -> object:
        from starlette.requests import Request
        from starlette.responses import Response

        assert isinstance(request, Request)
        try:
            principal = self._principal(request.scope)
        except AuthError as exc:
            return _json_error(exc.status, exc.code, exc.message)
        try:
            infos = await self.store.list_streams("__rooms/", limit=10_000)
        except StoreError as exc:
            return _json_error(503, "STORE_UNAVAILABLE", str(exc))
        names = []
        for info in infos:
            parts = info.path.split("/")
            if len(parts) != 3 or parts[2] != "meta":
                continue
            name = parts[1]
            if self.authorizer.authorize(principal, "read", "room/" + name):
                names.append(name)
        # "members": connections on this node; "clients": clients present in the room on
        # every node (from the shared presence when there is one, else this node's).
        counts = await self.presence.counts(names)
        out = []
        for name in names:
            room = self.rooms.get(name)
            clients = counts.get(name)
            if clients is None:
                clients = len(room.presence.members()) if room else 0
            out.append(
                {
                    "room": name,
                    "members": len(room.members) if room else 0,
                    "clients": clients,
                    "loaded": room is not None,
                    "serverSeq": room.last_seq if room else None,
                }
            )
        return Response(
            msgspec.json.encode({"rooms": out}),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def _journal(self, request: object) -> object:
        from starlette.requests import Request

        assert isinstance(request, Request)
        name = request.path_params["room"]
        problem = room_name_problem(name)
        if problem is not None:
            return _json_error(400, "BAD_ROOM", problem)
        return _Delegate(self.journal_app, journal_path(name))


class _Delegate:
    """A Starlette 'response' that hands the request to the streams app for one path."""

    def __init__(self, app: StreamsApp, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app({**scope, "path_params": {"path": self.path}}, receive, send)


def _json_error(status: int, code: str, message: str) -> object:
    from starlette.responses import Response

    return Response(
        error_body(code, message),
        status_code=status,
        media_type="application/json",
    )


async def _deny(scope: Scope, send: Send, exc: AuthError) -> None:
    """Refuse a WebSocket handshake with ``exc``'s HTTP status and JSON error body."""
    extensions = scope.get("extensions") or {}
    if "websocket.http.response" not in extensions:
        await _close(send, CloseCode.POLICY_VIOLATION, "")
        return
    body = error_body(exc.code, exc.message)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "websocket.http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


class _WsEndpoint:
    """Raw ASGI WebSocket handler of ``/v1/rooms/{room}`` (docs/protocol.md).

    The I/O shell of :class:`~durasync.protocol.room_server.ServerRoomSession`: it does the
    handshake, authorization and room loading, then pumps the member's frames through the
    session and carries out what the session asks of the room.
    """

    def __init__(self, service: RoomService) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One WebSocket connection, counted in the metrics and logged when it ends."""
        service = self.service
        metrics = service.metrics
        metrics.websockets.inc()
        started = time.monotonic()
        code = 0
        try:
            code = await self._connection(scope, receive, send)
        finally:
            metrics.websockets.dec()
            if service.request_log is not None:
                route = getattr(scope.get("route"), "path", "/v1/rooms/{room}")
                service.request_log.websocket_done(route, code, time.monotonic() - started)

    async def _connection(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Serve the connection; returns how it ended: the close code the server sent, the
        HTTP status of a refused handshake, or 1000 when the client left."""
        service = self.service
        name: str = scope["path_params"]["room"]
        first = await receive()
        if first["type"] != "websocket.connect":
            return 1000
        # Authentication and read permission are checked before accepting. A refused handshake
        # is an HTTP 401/403 with the JSON error body where the ASGI server supports the
        # WebSocket Denial Response extension (uvicorn does), else a close before accept
        # (uvicorn answers that with a bare 403).
        try:
            principal = service.authorizer.authenticate(credentials_from_scope(scope))
            if not service.authorizer.authorize(principal, "read", "room/" + name):
                raise AuthError(403, "FORBIDDEN", f"not allowed to read room/{name}")
        except AuthError as exc:
            await _deny(scope, send, exc)
            return exc.status
        can_write = service.authorizer.authorize(principal, "write", "room/" + name)
        await send({"type": "websocket.accept"})
        if service._closing:
            # Not the client's fault: 4008 tells it to resume (here after a restart, or on
            # another node), where 4400 would tell it to stop.
            await _close(send, CloseCode.RESUME, "server shutting down")
            return int(CloseCode.RESUME)
        try:
            join = parse_join(name, scope.get("query_string", b""))
            room = await self._open_room(join, can_write=can_write)
        except JoinRefused as refused:
            await _close(send, refused.code, refused.reason)
            return int(refused.code)
        session = ServerRoomSession(
            join,
            room,
            can_write=can_write,
            rules=service.settings.rules(),
            now=asyncio.get_running_loop().time(),
        )
        session.on_error = self._count_error
        return await self._serve(room, session, receive, send)

    def _count_error(self, code: str) -> None:
        metrics = self.service.metrics
        metrics.error("rooms", code)
        if code == "RATE_LIMITED":
            metrics.room_rate_limited.inc()

    async def _open_room(self, join: JoinRequest, *, can_write: bool) -> Room:
        """Load (or create) the room of ``join`` and admit it.

        Raises:
            JoinRefused: the room does not exist and the member may not create it (4403), the
                store is unavailable (1011), or the room is full (4429).
        """
        service = self.service
        try:
            # Joining creates a missing room; a read-only member may only join existing ones.
            room = await service.get_room(join.room, create=can_write)
        except NoSuchStream:
            raise join.missing_room() from None
        except (StoreError, RoomFailed) as exc:
            log.warning("room %s: load failed: %s", join.room, exc)
            raise JoinRefused(CloseCode.INTERNAL_ERROR, "store unavailable") from None
        if join.needs_catch_up(room):
            try:
                await room.catch_up()
            except StoreError as exc:
                log.warning("room %s: catch-up failed: %s", join.room, exc)
                raise JoinRefused(CloseCode.INTERNAL_ERROR, "store unavailable") from None
        replacing = any(m.client == join.client for m in room.members)
        join.check_capacity(
            len(room.members), replacing=replacing, max_members=service.settings.max_members
        )
        return room

    async def _serve(
        self, room: Room, session: ServerRoomSession, receive: Receive, send: Send
    ) -> int:
        """Admit the member (its ``state`` first) and pump its frames until it leaves;
        returns the close code the server sent, or 1000 when the client left."""

        async def raw_send(data: bytes, f: Format) -> None:
            if f == "json":
                await send({"type": "websocket.send", "text": data.decode()})
            else:
                await send({"type": "websocket.send", "bytes": data})

        async def raw_close(code: int, reason: str) -> None:
            await _close(send, code, reason)

        join = session.join
        member = Member(
            join.client,
            join.fmt,
            send=raw_send,
            close=raw_close,
            limit=self.service.settings.send_queue_bytes,
        )
        # One connection per client id: a new one replaces the old (a reconnect that raced
        # the old socket's timeout).
        for other in list(room.members):
            if other.client == join.client:
                other.drop(CloseCode.REPLACED, "replaced by a newer connection of this client")
        member.start()
        room.join(member, since=join.since, epoch=join.epoch, now=asyncio.get_running_loop().time())
        try:
            await self._receive_loop(room, member, session, receive)
        except asyncio.CancelledError:
            if not member.abandoned:
                raise
            # Our own cancel (Member._close_quietly): the peer stopped reading and not even
            # the close frame could be written; end the handler, uvicorn closes the transport.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        finally:
            member.owner = None
            room.leave(member)
            await member.stop()
        return member.close_code or 1000

    async def _receive_loop(
        self, room: Room, member: Member, session: ServerRoomSession, receive: Receive
    ) -> None:
        """Feed the member's frames to its session and do what it says, until the member
        leaves or is dropped (the session decodes, meters and applies the rules; here only
        the room's I/O happens)."""
        loop = asyncio.get_running_loop()
        while not member.closed:
            event = await receive()
            kind = event["type"]
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive":
                continue
            data = event.get("bytes")
            if data is None:
                data = event.get("text") or b""
            now = loop.time()
            try:
                session.receive_data(data, now)
                for frame in session.data_to_send():
                    member.enqueue(frame)
                for ev in session.events_received():
                    if isinstance(ev, Active):
                        room.touch(member, now)
                    elif isinstance(ev, Commit):
                        try:
                            await room.submit(member, ev.msg)
                        except RoomFailed:
                            member.drop(ROOM_FAILED.code, ROOM_FAILED.reason)
                            return
                    elif isinstance(ev, PresenceSet):
                        room.set_presence(member, ev.state, now)
                    elif isinstance(ev, StateWanted):
                        if not await self._send_state(room, member, session, ev, now):
                            return
                    else:
                        member.drop(ev.code, ev.reason)
                        return
            except Exception:
                # A bug, not the member's fault: log it, answer, keep the connection.
                log.exception("room %s: handling a frame of %s failed", room.name, member.client)
                session.send_error(None, "INTERNAL_ERROR", "the server failed to handle this frame")
                for frame in session.data_to_send():
                    member.enqueue(frame)

    @staticmethod
    async def _send_state(
        room: Room, member: Member, session: ServerRoomSession, want: StateWanted, now: float
    ) -> bool:
        """Answer a ``sync`` with a ``state`` frame (after a catch-up if asked) and charge it;
        False if the store failed (the member is dropped)."""
        if want.catch_up:
            try:
                await room.catch_up()
            except StoreError:
                member.drop(ROOM_FAILED.code, ROOM_FAILED.reason)
                return False
        state = room.state_frame(member, since=want.since, epoch=want.epoch)
        if want.charge:
            session.charge_answer(len(state), now)
        member.enqueue(state)
        return True


async def _close(send: Send, code: int, reason: str) -> None:
    """Close the WebSocket (accepted or not) with ``code`` and ``reason``."""
    await send({"type": "websocket.close", "code": int(code), "reason": reason})
