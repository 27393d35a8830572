"""ReliableHub directly: a raw WebSocket client speaking the session frames by hand.

The hub runs in uvicorn on a free loopback port (``client.apps.running``); every wait is a
bounded ``recv``, never a sleep.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from client.apps import running
from durasync.endpoints import ReliableConnection, ReliableHub
from durasync.protocol import CloseCode, FrameCodec, SessionLimits
from durasync.protocol.frames import Ack, Bye, ErrorFrame, Frame, Hello, Msg, Welcome
from helpers import eventually

codec = FrameCodec("json")


def hub_app(hub: ReliableHub, handler: Callable[[ReliableConnection], Any]) -> Starlette:
    async def endpoint(websocket: WebSocket) -> None:
        await hub.serve(websocket, handler)

    return Starlette(routes=[WebSocketRoute("/s", endpoint)])


async def echo(conn: ReliableConnection) -> None:
    async for message in conn:
        await conn.send(message)


@pytest.fixture
def ids() -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"s{next(numbers)}"


@pytest.fixture
async def echo_hub(ids: Callable[[], str]) -> AsyncIterator[tuple[int, ReliableHub]]:
    hub = ReliableHub(new_id=ids, limits=SessionLimits(ack_every=1), resume_ttl=30)
    async with running(hub_app(hub, echo)) as port:
        yield port, hub


async def send(ws: ClientConnection, frame: Frame) -> None:
    await ws.send(codec.encode(frame))


async def recv(ws: ClientConnection) -> Frame:
    async with asyncio.timeout(10):
        return codec.decode(await ws.recv())


async def closed_with(ws: ClientConnection) -> tuple[int | None, str]:
    with pytest.raises(ConnectionClosed) as exc:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    rcvd = exc.value.rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")


async def test_hello_welcome_echo_and_ack(echo_hub: tuple[int, ReliableHub]) -> None:
    port, hub = echo_hub
    async with connect(f"ws://127.0.0.1:{port}/s") as ws:
        await send(ws, Hello())
        assert await recv(ws) == Welcome(session="s1", last_seen=0, resumed=False)
        await send(ws, Msg(seq=1, text="hi"))
        # the hub acks our message (ack_every=1) and the handler echoes it as its seq 1
        got = [await recv(ws), await recv(ws)]
        assert Ack(seq=1) in got and Msg(seq=1, text="hi") in got
        session = hub.registry.get("s1")
        assert session is not None and session.unacked == 1
        await send(ws, Ack(seq=1))
        await eventually(lambda: session.unacked == 0)


async def test_a_resume_replays_what_was_not_acknowledged(
    echo_hub: tuple[int, ReliableHub],
) -> None:
    port, hub = echo_hub
    async with connect(f"ws://127.0.0.1:{port}/s") as ws:
        await send(ws, Hello())
        await recv(ws)
        for i in (1, 2):
            await send(ws, Msg(seq=i, text=f"m{i}"))
        echoed = [f for f in [await recv(ws) for _ in range(4)] if isinstance(f, Msg)]
        assert [m.text for m in echoed] == ["m1", "m2"]
        await send(ws, Ack(seq=1))  # the echo of m2 stays unacknowledged
    # The transport dropped without bye: the session waits for the resume.
    session = hub.registry.get("s1")
    assert session is not None
    await eventually(lambda: not session.attached)
    async with connect(f"ws://127.0.0.1:{port}/s") as ws:
        await send(ws, Hello(session="s1", last_seen=1))
        assert await recv(ws) == Welcome(session="s1", last_seen=2, resumed=True)
        assert await recv(ws) == Msg(seq=2, text="m2")
        await send(ws, Msg(seq=3, text="m3"))  # numbering goes on
        got = [await recv(ws), await recv(ws)]
        assert Msg(seq=3, text="m3") in got


async def test_a_bad_first_frame_is_refused_with_1002(echo_hub: tuple[int, ReliableHub]) -> None:
    port, hub = echo_hub
    async with connect(f"ws://127.0.0.1:{port}/s") as ws:
        await send(ws, Msg(seq=1, text="no hello first"))
        err = await recv(ws)
        assert isinstance(err, ErrorFrame) and err.code == "unexpected_frame" and err.permanent
        assert (await closed_with(ws))[0] == CloseCode.PROTOCOL_ERROR
    async with connect(f"ws://127.0.0.1:{port}/s") as ws:
        await ws.send("{not json")
        err = await recv(ws)
        assert isinstance(err, ErrorFrame) and err.code == "bad_frame"
        assert (await closed_with(ws))[0] == CloseCode.PROTOCOL_ERROR
    assert len(hub.registry) == 0


async def test_no_hello_in_time_is_closed_with_1002(ids: Callable[[], str]) -> None:
    hub = ReliableHub(new_id=ids, handshake_timeout=0.2)
    async with running(hub_app(hub, echo)) as port, connect(f"ws://127.0.0.1:{port}/s") as ws:
        assert await closed_with(ws) == (CloseCode.PROTOCOL_ERROR, "no hello")


async def test_a_full_registry_answers_busy_with_1013(ids: Callable[[], str]) -> None:
    hub = ReliableHub(new_id=ids, max_sessions=1)
    async with running(hub_app(hub, echo)) as port, connect(f"ws://127.0.0.1:{port}/s") as first:
        await send(first, Hello())
        await recv(first)
        async with connect(f"ws://127.0.0.1:{port}/s") as second:
            await send(second, Hello())
            err = await recv(second)
            assert isinstance(err, ErrorFrame) and err.code == "busy" and not err.permanent
            assert (await closed_with(second))[0] == CloseCode.TRY_AGAIN_LATER


async def test_a_handler_that_returns_ends_the_session_with_bye(
    ids: Callable[[], str],
) -> None:
    async def once(conn: ReliableConnection) -> None:
        async for message in conn:
            await conn.send(message)
            return

    hub = ReliableHub(new_id=ids, limits=SessionLimits(ack_every=1))
    async with running(hub_app(hub, once)) as port, connect(f"ws://127.0.0.1:{port}/s") as ws:
        await send(ws, Hello())
        await recv(ws)
        await send(ws, Msg(seq=1, text="only"))
        frames = [await recv(ws) for _ in range(3)]
        assert Msg(seq=1, text="only") in frames and frames[-1] == Bye()
        assert await closed_with(ws) == (CloseCode.NORMAL, "bye")
    await eventually(lambda: len(hub.registry) == 0)


async def test_broadcast_drops_a_slow_consumer_with_1013(ids: Callable[[], str]) -> None:
    async def idle(conn: ReliableConnection) -> None:
        async for _ in conn:
            pass

    hub = ReliableHub(new_id=ids, limits=SessionLimits(max_unacked_messages=3))
    async with running(hub_app(hub, idle)) as port, connect(f"ws://127.0.0.1:{port}/s") as ws:
        await send(ws, Hello())
        await recv(ws)
        for i in range(3):
            assert hub.broadcast(f"b{i}") == 1  # never acknowledged by us
        assert hub.broadcast("one too many") == 0
        assert hub.slow_consumers_dropped == 1 and len(hub.registry) == 0
        code, reason = await closed_with(ws)
        assert (code, reason) == (CloseCode.TRY_AGAIN_LATER, "slow consumer")


async def test_a_newer_connection_of_the_session_supersedes_the_old(
    echo_hub: tuple[int, ReliableHub],
) -> None:
    port, _ = echo_hub
    async with connect(f"ws://127.0.0.1:{port}/s") as old:
        await send(old, Hello())
        await recv(old)
        async with connect(f"ws://127.0.0.1:{port}/s") as new:
            await send(new, Hello(session="s1"))
            assert await recv(new) == Welcome(session="s1", last_seen=0, resumed=True)
            assert await closed_with(old) == (CloseCode.NORMAL, "superseded")
            await send(new, Msg(seq=1, text="still here"))
            got = [await recv(new), await recv(new)]
            assert Msg(seq=1, text="still here") in got
