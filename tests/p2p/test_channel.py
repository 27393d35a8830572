"""DurableChannel over in-memory links (no WebRTC): replay across links, bounds, events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from durasync.p2p.channel import (
    ChannelClosedError,
    ChannelState,
    DurableChannel,
    new_client_session,
)
from durasync.p2p.options import ChannelOptions
from durasync.protocol import FrameCodec, SessionRegistry
from helpers import eventually


def _nothing(*args: object) -> None:
    return None


class FakeLink:
    """One end of an in-memory ordered data channel; ``buffered_amount`` drains when told."""

    def __init__(self) -> None:
        self.peer: FakeLink | None = None
        self.on_open: Callable[[], None] = _nothing
        self.on_message: Callable[[str | bytes], None] = _nothing
        self.on_close: Callable[[], None] = _nothing
        self.on_buffered_low: Callable[[], None] = _nothing
        self.is_open = True
        self.buffered_amount = 0
        self.hold = False  # keep sent bytes "buffered" until drain()
        self.held: list[str | bytes] = []
        self.low = 0

    def set_low_threshold(self, amount: int) -> None:
        self.low = amount

    def send(self, data: str | bytes) -> None:
        assert self.is_open
        if self.hold:
            self.held.append(data)
            self.buffered_amount += len(data)
            return
        peer = self.peer
        assert peer is not None
        asyncio.get_running_loop().call_soon(lambda: peer.is_open and peer.on_message(data))

    def drain(self) -> None:
        held, self.held = self.held, []
        self.hold = False
        for data in held:
            self.send(data)
        self.buffered_amount = 0
        self.on_buffered_low()

    def close(self) -> None:
        self.is_open = False


def pair() -> tuple[FakeLink, FakeLink]:
    a, b = FakeLink(), FakeLink()
    a.peer, b.peer = b, a
    return a, b


class Host:
    """The server side as DurableService runs it: a registry and one channel per session."""

    def __init__(self, options: ChannelOptions) -> None:
        self.options = options
        self.registry = SessionRegistry(
            new_id=lambda: f"s{time.monotonic_ns()}",
            codec=FrameCodec("msgpack"),
            limits=options.session,
        )
        self.channel: DurableChannel | None = None

    def accept(self, link: FakeLink) -> None:
        def first(raw: str | bytes) -> None:
            session = self.registry.open(raw, time.monotonic())
            if self.channel is None or self.channel.session is not session:
                self.channel = DurableChannel("chat", session, self.options)
            self.channel.attach(link, handshake_done=True)

        link.on_message = first

    def drop(self) -> None:
        assert self.channel is not None
        self.channel.detach()
        self.registry.detach(self.channel.session, time.monotonic())


async def test_exactly_once_in_order_across_link_replacements() -> None:
    opts = ChannelOptions()
    host = Host(opts)
    client = DurableChannel("chat", new_client_session(opts), opts)
    opened: list[bool] = []
    client.on("open", opened.append)
    received: list[str | bytes] = []
    for round_ in range(4):
        a, b = pair()
        host.accept(b)
        client.attach(a)
        await eventually(lambda: client.state is ChannelState.OPEN)
        assert host.channel is not None
        for i in range(50):
            client.send(f"m{round_ * 50 + i}")
        # take some, then the link dies with messages and acks in flight
        while len(received) < round_ * 50 + 20:
            received.append(await host.channel.receive())
        a.close()
        b.close()
        client.detach()
        host.drop()
    a, b = pair()
    host.accept(b)
    client.attach(a)
    assert host.channel is not None
    while len(received) < 200:
        received.append(await asyncio.wait_for(host.channel.receive(), 5))
    assert received == [f"m{i}" for i in range(200)]
    assert opened == [True] * 5  # resumed every time
    await eventually(lambda: client.unacked == 0)
    await client.close(1)
    assert client.state is ChannelState.CLOSED
    await eventually(lambda: host.channel is not None and host.channel.closed)
    with pytest.raises(ChannelClosedError):
        client.send("late")


async def test_queue_overflow_while_detached_drops_oldest_and_says_so() -> None:
    opts = ChannelOptions(max_queue_size=10)
    client = DurableChannel("chat", new_client_session(opts), opts)
    dropped: list[int] = []
    client.on("queue-overflow", dropped.append)
    for i in range(15):
        client.send(f"m{i}")
    assert sum(dropped) == 5 and client.queued == 10 and client.messages_dropped == 5
    host = Host(opts)
    a, b = pair()
    host.accept(b)
    client.attach(a)
    await eventually(lambda: host.channel is not None)
    assert host.channel is not None
    got = [await asyncio.wait_for(host.channel.receive(), 5) for _ in range(10)]
    assert got == [f"m{i}" for i in range(5, 15)]
    await client.close(1)


async def test_queued_messages_expire_by_age() -> None:
    opts = ChannelOptions(max_message_age=0.05)
    client = DurableChannel("chat", new_client_session(opts), opts)
    dropped: list[int] = []
    client.on("queue-overflow", dropped.append)
    client.send("old")
    await eventually(lambda: dropped == [1])
    assert client.queued == 0
    await client.close(0)


async def test_write_waits_for_room_instead_of_dropping() -> None:
    opts = ChannelOptions(max_queue_size=4)
    client = DurableChannel("chat", new_client_session(opts), opts)
    for i in range(4):
        await client.write(f"m{i}")
    blocked = asyncio.create_task(client.write("m4"))
    await asyncio.sleep(0.02)
    assert not blocked.done() and client.messages_dropped == 0
    host = Host(opts)
    a, b = pair()
    host.accept(b)
    client.attach(a)
    await asyncio.wait_for(blocked, 5)
    await eventually(lambda: host.channel is not None)
    assert host.channel is not None
    got = [await asyncio.wait_for(host.channel.receive(), 5) for _ in range(5)]
    assert got == [f"m{i}" for i in range(5)]
    await client.drained()
    await client.close(1)


async def test_high_water_mark_and_buffered_amount_low() -> None:
    opts = ChannelOptions(high_water_mark=2000, low_water_mark=500)
    host = Host(opts)
    client = DurableChannel("chat", new_client_session(opts), opts)
    lows: list[bool] = []
    client.on("buffered-amount-low", lambda: lows.append(True))
    a, b = pair()
    host.accept(b)
    client.attach(a)
    await eventually(lambda: client.state is ChannelState.OPEN)
    a.hold = True
    for _ in range(10):
        client.send("x" * 1000)
    await eventually(lambda: client.unacked == 10)
    await asyncio.sleep(0.02)
    assert 2000 < a.buffered_amount <= 3200  # stopped writing above the high-water mark
    assert client.buffered_amount > a.buffered_amount  # the rest waits in the channel
    a.drain()
    assert lows == [True]
    await eventually(lambda: host.channel is not None)
    assert host.channel is not None
    got = [await asyncio.wait_for(host.channel.receive(), 5) for _ in range(10)]
    assert len(got) == 10
    await client.close(1)


async def test_a_reader_that_stops_reading_stops_the_acks() -> None:
    opts = ChannelOptions(inbox_size=8)
    host = Host(opts)
    client = DurableChannel("chat", new_client_session(opts), opts)
    a, b = pair()
    host.accept(b)
    client.attach(a)
    for i in range(100):
        client.send(f"m{i}")
    await eventually(lambda: host.channel is not None and len(host.channel._inbox) == 8)
    await asyncio.sleep(0.05)
    assert client.unacked >= 100 - 8  # nothing beyond what was delivered is acknowledged
    assert host.channel is not None
    got = [await asyncio.wait_for(host.channel.receive(), 5) for _ in range(100)]
    assert got == [f"m{i}" for i in range(100)]
    await eventually(lambda: client.unacked == 0)
    await client.close(1)
