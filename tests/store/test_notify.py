"""The in-process notifier behind ``LogStore.wait_for`` (store/notify.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from durasync.store.notify import Deadlines, Notifier, WaitState
from helpers import eventually


async def test_notify_wakes_every_waiter_in_wait_order() -> None:
    notifier = Notifier()
    state: dict[str, WaitState] = {"s": "wait"}
    woke: list[int] = []

    async def waiter(i: int) -> None:
        assert await notifier.wait("p", lambda: state["s"], 5.0)
        woke.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(20)]
    await asyncio.sleep(0)
    assert notifier.waiters == 20 and notifier.waiting_paths == 1
    state["s"] = "ready"
    notifier.notify("p")
    await asyncio.wait_for(asyncio.gather(*tasks), 5.0)
    assert woke == list(range(20))
    assert notifier.waiters == 0 and notifier.waiting_paths == 0


async def test_spurious_wake_keeps_waiting_until_ready() -> None:
    notifier = Notifier()
    state: dict[str, WaitState] = {"s": "wait"}
    task = asyncio.create_task(notifier.wait("p", lambda: state["s"], 5.0))
    await eventually(lambda: notifier.waiters == 1)
    notifier.notify("p")  # wakes the waiter (its registration is dropped) ...
    assert notifier.waiters == 0
    await eventually(lambda: notifier.waiters == 1)  # ... which re-checks and registers again
    assert not task.done()
    notifier.notify("other")  # would have dropped the registration at once if it were a match
    assert notifier.waiters == 1
    assert not task.done()
    state["s"] = "ready"
    notifier.notify("p")
    assert await asyncio.wait_for(task, 5.0) is True


async def test_gone_returns_false() -> None:
    notifier = Notifier()
    state: dict[str, WaitState] = {"s": "wait"}
    task = asyncio.create_task(notifier.wait("p", lambda: state["s"], 5.0))
    await asyncio.sleep(0)
    state["s"] = "gone"
    notifier.notify("p")
    assert await asyncio.wait_for(task, 5.0) is False


async def test_timeout_returns_false_and_unregisters() -> None:
    notifier = Notifier()
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(
        *(notifier.wait("p", lambda: "wait", 0.05) for _ in range(50)),
        notifier.wait("q", lambda: "wait", 0.05),
    )
    assert results == [False] * 51
    assert loop.time() - started >= 0.04
    assert notifier.waiters == 0 and notifier.waiting_paths == 0
    # Zero or negative timeouts never register at all.
    assert await notifier.wait("p", lambda: "wait", 0) is False
    assert notifier.waiters == 0


async def test_ready_at_once_needs_no_notify() -> None:
    notifier = Notifier()
    assert await notifier.wait("p", lambda: "ready", 5.0) is True
    assert notifier.waiters == 0


async def test_cancelled_waiter_unregisters_and_others_still_wake() -> None:
    notifier = Notifier()
    state: dict[str, WaitState] = {"s": "wait"}
    keep = asyncio.create_task(notifier.wait("p", lambda: state["s"], 5.0))
    gone = asyncio.create_task(notifier.wait("p", lambda: state["s"], 5.0))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert notifier.waiters == 1
    state["s"] = "ready"
    notifier.notify("p")
    assert await asyncio.wait_for(keep, 5.0) is True
    assert notifier.waiters == 0


async def test_close_wakes_everyone_for_good() -> None:
    notifier = Notifier()
    tasks = [asyncio.create_task(notifier.wait(f"p{i % 3}", lambda: "wait", 5.0)) for i in range(9)]
    await asyncio.sleep(0)
    notifier.close()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 5.0) == [False] * 9
    assert await notifier.wait("p0", lambda: "ready", 5.0) is False
    assert notifier.waiters == 0


# -- Deadlines: one timer per bucket of deadlines --


async def test_deadline_fires_not_early_and_within_a_granule() -> None:
    deadlines = Deadlines(granule=0.02)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    deadline = loop.time() + 0.05
    deadlines.add(loop, future, deadline)
    await asyncio.wait_for(future, 5.0)
    fired = loop.time()
    assert fired >= deadline - 0.002  # the loop's own timer resolution, like call_at
    assert fired < deadline + 0.02 + 0.5  # a granule late at most (+ scheduling slack)
    assert deadlines.pending == 0


async def test_waits_in_one_bucket_share_one_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    deadlines = Deadlines(granule=10.0)
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    real_call_at = loop.call_at

    def counting_call_at(when: float, *args: Any) -> asyncio.TimerHandle:
        timers.append(when)
        return real_call_at(when, *args)

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    now = loop.time()
    futures = [loop.create_future() for _ in range(100)]
    keys = [deadlines.add(loop, f, now + 20.0) for f in futures]
    assert len(timers) == 1 and timers[0] >= now + 20.0
    assert deadlines.pending == 100
    for key, f in zip(keys, futures, strict=True):
        deadlines.discard(key, f)
    assert deadlines.pending == 0
    assert not any(f.done() for f in futures)


def test_a_new_event_loop_does_not_inherit_dead_timers() -> None:
    # The first loop ends before its bucket's timer fires; a wait on the next
    # loop in the same bucket must still get a timer of its own.
    deadlines = Deadlines(granule=0.5)
    target: list[float] = []

    async def first() -> None:
        loop = asyncio.get_running_loop()
        target.append(loop.time() + 0.05)
        deadlines.add(loop, loop.create_future(), target[0])

    async def second() -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        deadlines.add(loop, future, target[0])
        await asyncio.wait_for(future, 5.0)

    asyncio.run(first())
    asyncio.run(second())


async def test_notifier_wait_times_out_through_deadlines() -> None:
    notifier = Notifier()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await notifier.wait("p", lambda: "wait", 0.05) is False
    assert loop.time() >= started + 0.05 - 0.002
    assert notifier.waiters == 0
