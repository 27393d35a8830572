"""The replication event bus: subscriptions count from subscribe(), survive a timed-out
wait (the SSE heartbeat), are bounded, and end on close."""

from __future__ import annotations

import asyncio

import pytest

from durasync.replication.events import Event, EventBus


def ev(n: int) -> Event:
    return Event(type="checkpoint:pull-advance", link="l", remote="r", at=float(n))


async def test_a_subscription_gets_what_was_published_after_subscribe_and_survives_timeouts() -> (
    None
):
    bus = EventBus(limit=4, max_subscribers=1)
    sub = bus.subscribe()
    bus.publish(ev(1))  # before the first anext: not lost
    assert (await anext(sub)).at == 1.0
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await anext(sub)
    bus.publish(ev(2))  # after a timed-out wait: still subscribed
    assert (await anext(sub)).at == 2.0
    with pytest.raises(RuntimeError):
        bus.subscribe()
    for n in range(3, 10):
        bus.publish(ev(n))
    first = await anext(sub)
    assert first.type == "events:dropped" and first.fields["count"] == 3
    assert [(await anext(sub)).at for _ in range(4)] == [6.0, 7.0, 8.0, 9.0]
    await sub.aclose()
    assert bus.subscribers == 0
    with pytest.raises(StopAsyncIteration):
        await anext(sub)


async def test_close_ends_every_subscription() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    waiting = asyncio.ensure_future(anext(sub))
    await asyncio.sleep(0)
    bus.close()
    with pytest.raises(StopAsyncIteration):
        await waiting
    assert bus.subscribers == 0
