"""Unit tests of :class:`durasync.rooms.room.Member`: the bounded send queue and the drop path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from durasync.protocol.closecodes import CloseCode
from durasync.protocol.room_frames import Format
from durasync.rooms.room import Member

CLOSE_RESUME = CloseCode.RESUME


class FakeSocket:
    """A socket whose writes block while ``writable`` is clear (a paused transport)."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.sent: list[bytes] = []
        self.closed: list[int] = []
        self.started = 0  # sends begun (the sender took a frame off the queue)
        self.changed = asyncio.Condition()

    async def send(self, data: bytes, fmt: Format) -> None:
        await self._note()
        self.started += 1
        await self._note()
        await self.writable.wait()
        self.sent.append(data)
        await self._note()

    async def _note(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, cond: Callable[[], bool]) -> None:
        async with asyncio.timeout(2), self.changed:
            await self.changed.wait_for(cond)

    async def close(self, code: int, reason: str) -> None:
        await self.writable.wait()
        self.closed.append(code)


async def sender_done(m: Member) -> None:
    """Wait (bounded) until the member's sender task, if any, has ended."""
    task = m._task
    if task is not None:
        async with asyncio.timeout(2):
            await asyncio.wait({task})
    assert not m.sending


def member(sock: FakeSocket, limit: int, close_timeout: float = 5.0) -> Member:
    return Member(
        "c",
        "msgpack",
        send=sock.send,
        close=sock.close,
        limit=limit,
        close_timeout=close_timeout,
    )


async def test_blocked_socket_fills_queue_and_drops_with_resume_code() -> None:
    sock = FakeSocket()
    m = member(sock, limit=1000)
    m.start()
    m.enqueue(b"a" * 100)
    await sock.wait_for(lambda: bool(sock.sent))
    sock.writable.clear()  # the peer stops reading
    m.enqueue(b"b" * 100)
    await sock.wait_for(lambda: sock.started == 2)  # taken by the sender, now waiting
    for _ in range(11):  # the head frame plus 10 x 100 bytes behind it fit exactly
        m.enqueue(b"c" * 100)
    assert not m.closed
    m.enqueue(b"d")  # one byte over the bound: dropped, without waiting
    assert m.closed and m.close_code == CLOSE_RESUME and m.queued_bytes == 0
    sock.writable.set()  # the reader resumes: it gets the close frame
    await m.stop()
    assert sock.closed == [CLOSE_RESUME]


async def test_one_frame_larger_than_the_bound_is_sent() -> None:
    sock = FakeSocket()
    m = member(sock, limit=100)
    m.enqueue(b"s" * 10_000)  # a big state frame at the head of the queue
    m.enqueue(b"p" * 50)  # fits behind it
    assert not m.closed
    m.start()
    await sock.wait_for(lambda: len(sock.sent) == 2)
    await m.stop()
    assert sock.closed == []


async def test_close_that_cannot_be_written_abandons_the_connection() -> None:
    sock = FakeSocket()
    sock.writable.clear()  # the peer reads nothing at all, not even the close frame
    m = member(sock, limit=10, close_timeout=0.05)

    async def handler() -> str:
        m.start()
        try:
            await asyncio.Event().wait()  # stands for the receive loop
        except asyncio.CancelledError:
            assert m.abandoned
            return "abandoned"
        return "not reached"

    task = asyncio.create_task(handler())
    await asyncio.sleep(0)
    m.enqueue(b"x" * 10)  # being written: the transport is paused
    m.enqueue(b"y" * 10)  # the head of the queue
    assert not m.closed
    m.enqueue(b"z" * 11)  # over the bound behind the head frame
    assert m.closed
    async with asyncio.timeout(2):
        assert await task == "abandoned"
    await m.stop()
    assert sock.closed == []


async def test_idle_member_has_no_sender_task_and_no_queue() -> None:
    sock = FakeSocket()
    m = member(sock, limit=1000)
    m.start()
    assert not m.sending and m._queue is None  # joined, nothing queued: nothing allocated
    m.enqueue(b"state")
    # A writable transport takes the frame at once, in the caller's step: no task, no queue.
    assert sock.sent == [b"state"]
    assert not m.sending and m._queue is None and m.queued_bytes == 0
    await m.stop()


async def test_frames_keep_their_order_across_sender_restarts() -> None:
    sock = FakeSocket()
    m = member(sock, limit=10_000)
    m.start()
    expected: list[bytes] = []
    for burst in range(20):
        # Queue while a sender is running (one joins the queue, none starts a second sender),
        # then let the queue drain completely so the next burst starts a new sender.
        for i in range(burst % 4 + 1):
            frame = f"{burst}.{i}".encode()
            expected.append(frame)
            m.enqueue(frame)
            if i == 0:
                await asyncio.sleep(0)  # the sender takes the first frame, then waits
        await sock.wait_for(lambda: len(sock.sent) == len(expected))
        await sender_done(m)
    assert sock.sent == expected
    await m.stop()


async def test_slow_reader_dropped_after_the_sender_went_idle() -> None:
    sock = FakeSocket()
    m = member(sock, limit=300)
    m.start()
    m.enqueue(b"j" * 10)
    await sock.wait_for(lambda: len(sock.sent) == 1)
    await sender_done(m)
    sock.writable.clear()  # the reader stops reading while the member is idle
    m.enqueue(b"b" * 100)  # starts a new sender, which takes it and waits
    await sock.wait_for(lambda: sock.started == 2)
    for _ in range(4):  # the head frame plus 3 x 100 bytes behind it fit exactly
        m.enqueue(b"c" * 100)
    assert not m.closed
    m.enqueue(b"d")
    assert m.closed and m.close_code == CLOSE_RESUME
    sock.writable.set()
    await m.stop()
    assert sock.closed == [CLOSE_RESUME] and not m.sending


async def test_send_failure_closes_member_and_ends_sender() -> None:
    async def broken(data: bytes, fmt: Format) -> None:
        raise ConnectionResetError

    async def close(code: int, reason: str) -> None:
        pass

    m = Member(
        "c",
        "msgpack",
        send=broken,
        close=close,
        limit=100,
    )
    m.start()
    m.enqueue(b"x")
    m.enqueue(b"y")
    await sender_done(m)
    assert m.closed and m.queued_bytes == 0
    m.enqueue(b"z")  # ignored after close: no new sender
    assert not m.sending
    await m.stop()


async def test_frame_that_must_wait_is_finished_by_a_task_and_keeps_its_place() -> None:
    sock = FakeSocket()
    m = member(sock, limit=1000)
    m.start()
    sock.writable.clear()  # the transport is paused when the frame arrives
    m.enqueue(b"1")  # begun in our step, suspended: a sender task takes it over
    assert sock.started == 1 and sock.sent == [] and m.sending
    m.enqueue(b"2")
    m.enqueue(b"3")
    sock.writable.set()
    await sock.wait_for(lambda: len(sock.sent) == 3)
    await sender_done(m)
    assert sock.sent == [b"1", b"2", b"3"] and m._queue is None
    m.enqueue(b"4")  # idle again: straight out
    assert sock.sent[-1] == b"4" and not m.sending
    await m.stop()


async def test_send_failing_after_it_waited_closes_the_member() -> None:
    writable = asyncio.Event()

    async def fails_later(data: bytes, fmt: Format) -> None:
        await writable.wait()
        raise ConnectionResetError

    m = Member(
        "c",
        "msgpack",
        send=fails_later,
        close=FakeSocket().close,
        limit=100,
    )
    m.start()
    m.enqueue(b"x")
    m.enqueue(b"y")
    assert m.sending and not m.closed
    writable.set()
    await sender_done(m)
    assert m.closed and m.queued_bytes == 0 and m._queue is None
    await m.stop()
