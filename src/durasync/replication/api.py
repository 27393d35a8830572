"""HTTP routes of replication (``/v1/replication/...``), behind the server's authorizer.

Operator API (docs/replication.md "Operator's view"):

- ``GET /v1/replication/links``: every link: status, connectivity, checkpoints, lag in
  messages and seconds, dead-letter count (``read`` on ``replication/links``);
- ``GET /v1/replication/links/{name}/dead-letters`` (``read``);
- ``GET /v1/replication/events``: the event stream as SSE (``read`` on ``replication/events``);
- ``POST /v1/replication/links/{name}/pause|resume|retry-dead-letters`` (``write`` on
  ``replication/links/<name>``).

Peer API (what another server's link asks this one; ``read`` on ``stream/<path>``):

- ``GET /v1/replication/server``: this store's replication identity;
- ``GET /v1/replication/streams?prefix=&after=&limit=``: streams under a prefix (paths,
  content types, incarnations, start and tail offsets, closure), reserved paths excluded;
- ``GET /v1/replication/streams/<path>?offset=&server=&epoch=&wait=``: a framed read (msgpack
  :class:`~durasync.replication.wire.StreamRead`): the messages' exact bytes from ``offset``,
  waiting up to ``wait`` seconds at the tail. A cursor this server cannot serve is answered
  ``410`` with ``{requested, oldestAvailable, latestAvailable, reason}``: ``stream_mismatch``
  (``server`` is not this store), ``epoch_mismatch`` (the stream was re-created),
  ``token_too_old`` (below the retained start), ``token_too_new`` (beyond the tail).

Every error is ``{"error": {"code", "message"}}`` with a 4xx (503 when the store is
unavailable); parameters are bounded (limit, wait, batch sizes, path length).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from durasync.auth import Action, AuthError, Authorizer, Principal, credentials_from_scope
from durasync.httpwire import error_body
from durasync.namespaces import is_reserved
from durasync.protocol.room_rules import room_name_problem
from durasync.replication.core import Token
from durasync.replication.reconcile import answer_queries
from durasync.replication.rooms import (
    ROOM_PREFIX,
    FetchAnswer,
    FetchBody,
    JournalFrame,
    PushAnswer,
    PushBody,
    ReconcileAnswer,
    ReconcileBody,
    RoomHead,
    RoomIndex,
    RoomList,
    decode_record,
    room_epoch,
    room_head,
)
from durasync.replication.service import ReplicationService, UnknownLink
from durasync.replication.streams import stream_epoch
from durasync.replication.wire import (
    GapReason,
    ServerInfo,
    StreamEntry,
    StreamList,
    StreamRead,
    gap_body,
)
from durasync.rooms.errors import RoomFailed
from durasync.rooms.room import journal_path as room_journal_path
from durasync.store.base import OFFSET_START, StreamInfo
from durasync.store.errors import BadOffset, DataGone, NoSuchStream, StoreUnavailable
from durasync.store.offsets import decode_offset, is_offset
from durasync.streams.errors import RequestRefused
from durasync.streams.protocol import MAX_PATH_LEN, validate_stream_path

__all__ = ["replication_routes"]

log = logging.getLogger("durasync.replication")

_JSON: Final = "application/json"
_MSGPACK: Final = "application/msgpack"
#: Length-prefixed msgpack frames of a live framed read.
_FRAMES: Final = "application/vnd.durasync.frames"
#: Longest live framed read (the client then reconnects from its tail).
_STREAM_SECONDS: Final = 300.0
#: Journal records per frame, messages per push and ids per fetch request.
_ROOM_BATCH: Final = 1000
_NO_STORE: Final = {"Cache-Control": "no-store"}
_MAX_LIST: Final = 1000
#: Streams one listing scans (a link follows at most 10,000).
_MAX_SCAN: Final = 10_001
_MAX_READ_BYTES: Final = 16 << 20
_MAX_READ_MESSAGES: Final = 100_000
#: Seconds between SSE comments on an idle event stream (a dead client is noticed).
_HEARTBEAT: Final = 15.0

_encoder = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        error_body(code, message),
        status_code=status,
        media_type=_JSON,
        headers={**_NO_STORE, **(headers or {})},
    )


def _json(value: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(value), status_code=status, media_type=_JSON, headers=_NO_STORE)


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 12:
        raise RequestRefused(400, "INVALID_PARAMETER", f"{name} must be a non-negative integer")
    return max(lo, min(hi, int(raw)))


def _float_param(request: Request, name: str, hi: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise RequestRefused(400, "INVALID_PARAMETER", f"{name} must be a number") from None
    if not 0 <= value < float("inf"):
        raise RequestRefused(400, "INVALID_PARAMETER", f"{name} must be a non-negative number")
    return min(value, hi)


class _Api:
    def __init__(self, service: ReplicationService, authorizer: Authorizer) -> None:
        self.service = service
        self.authorizer = authorizer

    def _principal(self, request: Request) -> Principal:
        return self.authorizer.authenticate(credentials_from_scope(request.scope))

    def _require(self, principal: Principal, action: Action, resource: str) -> None:
        if not self.authorizer.authorize(principal, action, resource):
            raise AuthError(403, "FORBIDDEN", f"not allowed to {action} {resource}")

    async def handle(self, request: Request, endpoint: Any) -> Response:
        """Run one endpoint with the shared error mapping."""
        try:
            principal = self._principal(request)
            response: Response = await endpoint(request, principal)
            return response
        except AuthError as exc:
            headers = {"WWW-Authenticate": 'Bearer realm="durasync"'} if exc.status == 401 else {}
            return _error(exc.status, exc.code, exc.message, headers)
        except RequestRefused as exc:
            return _error(exc.status, exc.code, exc.message)
        except UnknownLink as exc:
            return _error(404, "UNKNOWN_LINK", f"no replication link named {exc.args[0]!r}")
        except StoreUnavailable:
            return _error(
                503, "STORE_UNAVAILABLE", "the store is unavailable", {"Retry-After": "1"}
            )
        except RoomFailed:
            return _error(
                503, "ROOM_UNAVAILABLE", "the room is reloading, retry", {"Retry-After": "1"}
            )

    # -- operator --------------------------------------------------------------------

    async def links(self, request: Request, principal: Principal) -> Response:
        self._require(principal, "read", "replication/links")
        return _json({"server": self.service.server_id, "links": self.service.links_view()})

    async def dead_letters(self, request: Request, principal: Principal) -> Response:
        name = request.path_params["name"]
        self._require(principal, "read", f"replication/links/{name}")
        return _json({"link": name, "deadLetters": self.service.dead_letters(name)})

    async def control(self, request: Request, principal: Principal) -> Response:
        name = request.path_params["name"]
        action = request.path_params["action"]
        self._require(principal, "write", f"replication/links/{name}")
        if action == "pause":
            await self.service.pause(name)
        elif action == "resume":
            await self.service.resume(name)
        elif action == "retry-dead-letters":
            count = await self.service.retry_dead_letters(name)
            return _json({"link": name, "retried": count})
        else:
            return _error(
                404, "NOT_FOUND", f"no action {action!r} (pause, resume, retry-dead-letters)"
            )
        runner = self.service.runners.get(name)
        return _json({"link": name, "status": runner.machine.status if runner else None})

    async def events(self, request: Request, principal: Principal) -> Response:
        self._require(principal, "read", "replication/events")
        bus = self.service.events
        if bus.subscribers >= bus.max_subscribers:
            return _error(
                503, "TOO_MANY_SUBSCRIBERS", "too many event subscribers", {"Retry-After": "5"}
            )

        async def body() -> AsyncIterator[bytes]:
            # Subscribed before the first line goes out: a client that got it misses nothing.
            try:
                iterator = bus.subscribe()
            except RuntimeError:
                return
            try:
                yield b": durasync replication events\n\n"
                while True:
                    try:
                        async with asyncio.timeout(_HEARTBEAT):
                            event = await anext(iterator)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    except StopAsyncIteration:
                        return
                    yield b"event: " + event.type.encode() + b"\ndata: " + event.to_json() + b"\n\n"
            finally:
                await bus.aclose_subscription(iterator)

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    # -- peer ------------------------------------------------------------------------

    async def server(self, request: Request, principal: Principal) -> Response:
        return _json(ServerInfo(id=await self.service.identity()))

    def _entry(self, info: StreamInfo) -> StreamEntry:
        return StreamEntry(
            path=info.path,
            content_type=info.config.content_type,
            epoch=stream_epoch(info),
            start=info.start,
            tail=info.tail,
            closed=info.closed,
        )

    async def streams(self, request: Request, principal: Principal) -> Response:
        prefix = request.query_params.get("prefix", "")
        after = request.query_params.get("after", "")
        if len(prefix) > MAX_PATH_LEN or len(after) > MAX_PATH_LEN:
            raise RequestRefused(400, "INVALID_PARAMETER", "prefix and after are stream paths")
        limit = _int_param(request, "limit", _MAX_LIST, 1, _MAX_LIST)
        whole = self.authorizer.authorize(principal, "read", "stream/" + prefix)
        server = await self.service.identity()
        # The store lists by prefix only: take at most _MAX_SCAN paths and page past ``after``
        # here (a link follows at most that many streams anyway).
        out: list[StreamEntry] = []
        more = False
        for info in await self.service.store.list_streams(prefix, limit=_MAX_SCAN):
            if info.path <= after or is_reserved(info.path):
                continue
            if not whole and not self.authorizer.authorize(
                principal, "read", "stream/" + info.path
            ):
                continue
            if len(out) == limit:
                more = True
                break
            out.append(self._entry(info))
        return _json(StreamList(server=server, streams=out, more=more))

    async def read(self, request: Request, principal: Principal) -> Response:
        path = request.path_params["path"]
        validate_stream_path(path)
        if is_reserved(path):
            raise RequestRefused(404, "NOT_FOUND", f"no stream at {path!r}")
        self._require(principal, "read", "stream/" + path)
        store = self.service.store
        server = await self.service.identity()
        offset = request.query_params.get("offset", OFFSET_START)
        if offset != OFFSET_START and not is_offset(offset):
            raise RequestRefused(400, "INVALID_OFFSET", "offset must be -1 or a stream offset")
        max_bytes = _int_param(request, "max_bytes", 4 << 20, 1, _MAX_READ_BYTES)
        max_messages = _int_param(request, "max_messages", 10_000, 1, _MAX_READ_MESSAGES)
        wait = _float_param(request, "wait", self.service.max_wait)
        asked_server = request.query_params.get("server")
        asked_epoch = request.query_params.get("epoch")
        try:
            info = await store.head(path)
        except (NoSuchStream, DataGone):
            raise RequestRefused(404, "NOT_FOUND", f"no stream at {path!r}") from None
        epoch = stream_epoch(info)
        asked = (offset, asked_server, asked_epoch)
        gap = self._gap(info, server, epoch, asked)
        if gap is not None:
            return gap
        if request.query_params.get("live") == "stream":
            frames = self._frames(
                path, offset, (server, epoch), (max_bytes, max_messages), max(wait, 1.0)
            )
            return StreamingResponse(
                frames, media_type=_FRAMES, headers={"Cache-Control": "no-store"}
            )
        try:
            result = await store.read(path, offset, max_bytes=max_bytes, max_messages=max_messages)
            if not result.entries and not result.closed and wait > 0:
                await self._wait(path, result.next_offset, wait)
                result = await store.read(
                    path, result.next_offset, max_bytes=max_bytes, max_messages=max_messages
                )
            info = await store.head(path)
        except NoSuchStream:
            raise RequestRefused(404, "NOT_FOUND", f"no stream at {path!r}") from None
        except DataGone:
            try:
                info = await store.head(path)
            except (NoSuchStream, DataGone):
                raise RequestRefused(404, "NOT_FOUND", f"no stream at {path!r}") from None
            gap = self._gap(info, server, stream_epoch(info), asked)
            if gap is not None:
                return gap
            raise RequestRefused(410, "GONE", "the offset is no longer retained") from None
        except BadOffset as exc:
            raise RequestRefused(400, "INVALID_OFFSET", str(exc)) from None
        if stream_epoch(info) != epoch:
            # Re-created between our reads: the client asks again and meets the new epoch.
            raise RequestRefused(503, "RETRY", "the stream changed while it was read")
        start = offset if offset != OFFSET_START else info.start
        if result.entries:
            start = result.entries[0].offset
        body = StreamRead(
            server=server,
            epoch=epoch,
            content_type=info.config.content_type,
            start=info.start,
            tail=info.tail,
            offset=start,
            next=result.next_offset,
            entries=[e.data for e in result.entries],
            up_to_date=result.up_to_date,
            closed=result.closed,
        )
        return Response(_msgpack.encode(body), media_type=_MSGPACK, headers=_NO_STORE)

    async def _frames(
        self,
        path: str,
        offset: str,
        identity: tuple[str, str],
        bounds: tuple[int, int],
        heartbeat: float,
    ) -> AsyncIterator[bytes]:
        """A live framed read: one frame (4-byte big-endian length, then a msgpack
        :class:`StreamRead`) per batch from ``offset`` on, as the data arrives; an empty frame
        at least every ``heartbeat`` seconds; the response ends when the stream is closed and
        sent, deleted or re-created, after :data:`_STREAM_SECONDS`, or at shutdown (the
        client reconnects from its tail)."""
        store = self.service.store
        server, epoch = identity
        max_bytes, max_messages = bounds
        deadline = time.monotonic() + _STREAM_SECONDS
        first = True
        while not self.service.closing.is_set():
            try:
                result = await store.read(
                    path, offset, max_bytes=max_bytes, max_messages=max_messages
                )
                info = await store.head(path)
            except (NoSuchStream, DataGone, BadOffset):
                return
            if stream_epoch(info) != epoch:
                return
            if result.entries or result.closed or first:
                first = False
                body = _msgpack.encode(
                    StreamRead(
                        server=server,
                        epoch=epoch,
                        content_type=info.config.content_type,
                        start=info.start,
                        tail=info.tail,
                        offset=result.entries[0].offset if result.entries else offset,
                        next=result.next_offset,
                        entries=[e.data for e in result.entries],
                        up_to_date=result.up_to_date,
                        closed=result.closed,
                    )
                )
                yield len(body).to_bytes(4, "big") + body
            if result.closed:
                return
            offset = result.next_offset
            if result.up_to_date:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                if not await self._wait(path, offset, min(left, heartbeat)):
                    first = True  # nothing new: a heartbeat frame

    async def _wait(self, path: str, offset: str, wait: float) -> bool:
        waiter = asyncio.ensure_future(self.service.store.wait_for(path, offset, wait))
        closing = asyncio.ensure_future(self.service.closing.wait())
        try:
            await asyncio.wait({waiter, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            closing.cancel()
        return waiter.done() and not waiter.cancelled() and waiter.result()

    def _gap(
        self,
        info: StreamInfo,
        server: str,
        epoch: str,
        asked: tuple[str, str | None, str | None],
    ) -> Response | None:
        """The 410 answer for a cursor ``(offset, server, epoch)`` this server cannot serve,
        or None."""
        offset, asked_server, asked_epoch = asked
        stream = f"{server}:{info.path}"
        start_i = decode_offset(info.start)[0]
        tail_i = decode_offset(info.tail)[0]
        oldest = Token(stream=stream, epoch=epoch, position=start_i, ref=info.start)
        latest = Token(stream=stream, epoch=epoch, position=tail_i, ref=info.tail)
        position = decode_offset(offset)[0] if offset != OFFSET_START else start_i
        requested = Token(
            stream=f"{asked_server or server}:{info.path}",
            epoch=asked_epoch or epoch,
            position=position,
            ref=offset,
        )
        reason: GapReason | None = None
        if asked_server is not None and asked_server != server:
            reason = "stream_mismatch"
        elif asked_epoch is not None and asked_epoch != epoch:
            reason = "epoch_mismatch"
        elif offset != OFFSET_START and position < start_i:
            reason = "token_too_old"
        elif offset != OFFSET_START and position > tail_i:
            reason = "token_too_new"
        if reason is None:
            return None
        return Response(
            gap_body(reason, requested, oldest, latest, f"cannot serve this cursor: {reason}"),
            status_code=410,
            media_type=_JSON,
            headers=_NO_STORE,
        )

    # -- rooms (peer) ----------------------------------------------------------------

    async def _room(self, request: Request, principal: Principal, action: Action) -> str:
        """The room a peer asks about (validated, authorized), marked replicated: from now on
        it folds in Lamport order here too."""
        room: str = request.path_params["room"]
        problem = room_name_problem(room)
        if problem is not None:
            raise RequestRefused(400, "BAD_ROOM", problem)
        self._require(principal, action, "room/" + room)
        if action == "write" or await room_epoch(self.service.store, room) is not None:
            await self.service.mark_room(room)
        return room

    async def rooms(self, request: Request, principal: Principal) -> Response:
        prefix = request.query_params.get("prefix", "")
        if len(prefix) > 128:
            raise RequestRefused(400, "INVALID_PARAMETER", "prefix is a room name prefix")
        server = await self.service.identity()
        store = self.service.store
        heads: list[RoomHead] = []
        if request.query_params.get("exact") == "1":
            if room_name_problem(prefix) is None and self.authorizer.authorize(
                principal, "read", "room/" + prefix
            ):
                head = await room_head(store, prefix)
                if head is not None:
                    heads.append(head)
            return _json(RoomList(server=server, rooms=heads))
        for info in await store.list_streams(ROOM_PREFIX + prefix, limit=_MAX_SCAN):
            parts = info.path.split("/")
            if len(parts) != 3 or parts[2] != "meta":
                continue
            name = parts[1]
            if not self.authorizer.authorize(principal, "read", "room/" + name):
                continue
            head = await room_head(store, name)
            if head is not None:
                heads.append(head)
            if len(heads) >= _MAX_LIST:
                break
        return _json(RoomList(server=server, rooms=heads))

    async def room_journal(self, request: Request, principal: Principal) -> Response:
        room = await self._room(request, principal, "read")
        store = self.service.store
        server = await self.service.identity()
        offset = request.query_params.get("offset", OFFSET_START)
        if offset not in (OFFSET_START, "now") and not is_offset(offset):
            raise RequestRefused(400, "INVALID_OFFSET", "offset must be -1, now or an offset")
        peer = request.query_params.get("peer")
        wait = _float_param(request, "wait", self.service.max_wait)
        head = await room_head(store, room)
        if head is None:
            raise RequestRefused(404, "ROOM_NOT_FOUND", f"no room {room!r}")
        stream = f"{server}:{room}"
        asked_server = request.query_params.get("server")
        asked_epoch = request.query_params.get("epoch")
        position = decode_offset(offset)[0] if is_offset(offset) else 0
        requested = Token(
            stream=f"{asked_server or server}:{room}",
            epoch=asked_epoch or head.epoch,
            position=position,
            ref=offset,
        )
        oldest = Token(stream=stream, epoch=head.epoch, position=head.first_seq - 1)
        latest = Token(stream=stream, epoch=head.epoch, position=head.last_seq)
        reason: GapReason | None = None
        if asked_server is not None and asked_server != server:
            reason = "stream_mismatch"
        elif asked_epoch is not None and asked_epoch != head.epoch:
            reason = "epoch_mismatch"
        elif is_offset(offset) and position < head.first_seq - 1:
            reason = "token_too_old"
        elif is_offset(offset) and position > head.last_seq:
            reason = "token_too_new"
        if reason is not None:
            return Response(
                gap_body(reason, requested, oldest, latest, f"cannot serve this cursor: {reason}"),
                status_code=410,
                media_type=_JSON,
                headers=_NO_STORE,
            )
        if request.query_params.get("live") == "stream":
            frames = self._journal_frames(room, offset, (server, head.epoch), peer, max(wait, 1.0))
            return StreamingResponse(
                frames, media_type=_FRAMES, headers={"Cache-Control": "no-store"}
            )
        frame = await self._journal_frame(room, offset, (server, head.epoch), peer)
        if frame is None:
            raise RequestRefused(410, "GONE", "the journal changed; ask again")
        return Response(_msgpack.encode(frame), media_type=_MSGPACK, headers=_NO_STORE)

    async def _journal_frame(
        self, room: str, offset: str, identity: tuple[str, str], peer: str | None
    ) -> JournalFrame | None:
        """One frame of the journal from ``offset``, leaving out the records whose origin or
        via is ``peer``; None if the journal cannot be read there any more."""
        store = self.service.store
        server, epoch = identity
        try:
            res = await store.read(
                room_journal_path(room), offset, max_bytes=4 << 20, max_messages=_ROOM_BATCH
            )
            info = await store.head(room_journal_path(room))
        except (NoSuchStream, DataGone, BadOffset):
            return None
        records: list[bytes] = []
        last = decode_offset(res.next_offset)[0]
        for entry in res.entries:
            rec = decode_record(entry.data)
            if rec is None:
                continue
            if peer is not None and peer in (rec.origin, rec.via):
                continue
            records.append(entry.data)
        return JournalFrame(
            server=server,
            epoch=epoch,
            offset=res.entries[0].offset if res.entries else res.next_offset,
            next=res.next_offset,
            last=last,
            first_seq=decode_offset(info.start)[0] + 1,
            last_seq=decode_offset(info.tail)[0],
            records=records,
            up_to_date=res.up_to_date,
        )

    async def _journal_frames(
        self,
        room: str,
        offset: str,
        identity: tuple[str, str],
        peer: str | None,
        heartbeat: float,
    ) -> AsyncIterator[bytes]:
        """A live framed read of a room journal (as :meth:`_frames` for streams)."""
        deadline = time.monotonic() + _STREAM_SECONDS
        first = True
        while not self.service.closing.is_set():
            frame = await self._journal_frame(room, offset, identity, peer)
            if frame is None:
                return
            if frame.next != offset or first:
                first = False
                body = _msgpack.encode(frame)
                yield len(body).to_bytes(4, "big") + body
            offset = frame.next
            if frame.up_to_date:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                if not await self._wait(room_journal_path(room), offset, min(left, heartbeat)):
                    first = True  # nothing new: a heartbeat frame

    async def _body(self, request: Request, limit: int = 16 << 20) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestRefused(413, "BODY_TOO_LARGE", f"request body larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestRefused(
                    413, "BODY_TOO_LARGE", f"request body larger than {limit} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def room_messages(self, request: Request, principal: Principal) -> Response:
        room = await self._room(request, principal, "write")
        port = self.service.rooms
        if port is None:
            raise RequestRefused(404, "NOT_FOUND", "rooms are not served here")
        try:
            body = msgspec.json.decode(await self._body(request), type=PushBody)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise RequestRefused(400, "INVALID_BODY", f"not a push body: {exc}") from None
        if len(body.items) > _ROOM_BATCH:
            raise RequestRefused(413, "TOO_MANY_MESSAGES", f"at most {_ROOM_BATCH} per request")
        items = [(i.msg, i.origin or body.server, body.server) for i in body.items]
        for msg, _, _ in items:
            msg.serverSeq = None
        results = await port.apply(room, items)
        return _json(PushAnswer(results=results))

    def _index(self, room: str) -> RoomIndex:
        return self.service.room_indexes.get(room)

    async def room_reconcile(self, request: Request, principal: Principal) -> Response:
        room = await self._room(request, principal, "read")
        try:
            body = msgspec.json.decode(await self._body(request, 1 << 20), type=ReconcileBody)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise RequestRefused(400, "INVALID_BODY", f"not a reconcile body: {exc}") from None
        if await room_epoch(self.service.store, room) is None:
            raise RequestRefused(404, "ROOM_NOT_FOUND", f"no room {room!r}")
        index = self._index(room)
        await index.refresh()
        try:
            answers = answer_queries(index.ids, body.queries)
        except ValueError as exc:
            raise RequestRefused(400, "INVALID_BODY", str(exc)) from None
        return _json(ReconcileAnswer(answers=answers))

    async def room_fetch(self, request: Request, principal: Principal) -> Response:
        room = await self._room(request, principal, "read")
        try:
            body = msgspec.json.decode(await self._body(request, 4 << 20), type=FetchBody)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise RequestRefused(400, "INVALID_BODY", f"not a fetch body: {exc}") from None
        if len(body.ids) > _ROOM_BATCH:
            raise RequestRefused(413, "TOO_MANY_IDS", f"at most {_ROOM_BATCH} ids per request")
        records = await self._index(room).fetch(set(body.ids))
        return _json(FetchAnswer(items=records))


def replication_routes(service: ReplicationService, authorizer: Authorizer) -> list[BaseRoute]:
    """The Starlette routes of the operator and peer APIs (see the module docstring)."""
    api = _Api(service, authorizer)

    def route(path: str, endpoint: Any, methods: list[str]) -> Route:
        async def call(request: Request) -> Response:
            return await api.handle(request, endpoint)

        return Route(path, call, methods=methods)

    return [
        route("/v1/replication/server", api.server, ["GET"]),
        route("/v1/replication/streams", api.streams, ["GET"]),
        route("/v1/replication/streams/{path:path}", api.read, ["GET"]),
        route("/v1/replication/links", api.links, ["GET"]),
        route("/v1/replication/links/{name}/dead-letters", api.dead_letters, ["GET"]),
        route("/v1/replication/links/{name}/{action}", api.control, ["POST"]),
        route("/v1/replication/events", api.events, ["GET"]),
        route("/v1/replication/rooms", api.rooms, ["GET"]),
        route("/v1/replication/rooms/{room}/journal", api.room_journal, ["GET"]),
        route("/v1/replication/rooms/{room}/messages", api.room_messages, ["POST"]),
        route("/v1/replication/rooms/{room}/reconcile", api.room_reconcile, ["POST"]),
        route("/v1/replication/rooms/{room}/fetch", api.room_fetch, ["POST"]),
    ]
