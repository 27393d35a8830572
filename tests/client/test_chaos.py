"""Chaos: stream tailers and room clients through the fault proxy while writers append and
edit; the server is SIGKILLed and restarted once mid-run.

Scaled down to stay well under a minute; ``bench/chaos.py`` runs the full 50 + 50 version
with the same scenario (:func:`run_chaos`).
"""

from __future__ import annotations

import asyncio
import json
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from durasync.client import LiveMode, ResilientOptions, StreamClient
from durasync.client.room import RoomClient
from durasync.protocol import BackoffPolicy
from faultproxy import FaultPlan, FaultProxy
from helpers import eventually

from .servers import ServerProc

RETRY = BackoffPolicy(initial_delay=0.05, max_delay=0.5, min_delay=0.01)
ROOM_OPTS = ResilientOptions(
    backoff=BackoffPolicy(initial_delay=0.05, max_delay=1.0, min_delay=0.01, stable_after=0.5),
    connect_timeout=5.0,
)


@dataclass
class ChaosReport:
    tailers: int
    rooms: int
    messages: int
    cuts: int
    refused: int


async def run_chaos(
    data_dir: Path,
    *,
    tailers: int,
    rooms: int,
    writers: int,
    rounds: int,
    seed: int = 7,
    limit: float = 120.0,
) -> ChaosReport:
    """Run the scenario; raises AssertionError on any lost, duplicated or reordered
    message, or a room replica that differs from the server's graph."""
    srv = ServerProc("durasync", data_dir=data_dir)
    port = srv.port
    plan = FaultPlan(cut_rate=0.01, stall_rate=0.01, stall=0.05, max_chunk=2048)
    try:
        async with (
            FaultProxy(
                "127.0.0.1", port, seed=seed, plan=plan, max_connections=4 * (tailers + rooms) + 64
            ) as proxy,
            StreamClient(srv.base, retry=RETRY, timeout=5, live_timeout=5, max_retries=0) as direct,
        ):
            flaky_base = f"http://127.0.0.1:{proxy.port}/v1/stream/"
            stream = "chaos"
            await direct.create(stream, content_type="application/json")
            received: list[list[Any]] = [[] for _ in range(tailers)]

            async def tail(k: int) -> None:
                async with StreamClient(flaky_base, retry=RETRY, timeout=5, live_timeout=5) as c:
                    live: LiveMode = "sse" if k % 2 else "long-poll"
                    async for batch in c.tail(stream, live=live):
                        received[k].extend(batch.json())

            tail_tasks = [asyncio.create_task(tail(k)) for k in range(tailers)]
            members = [
                RoomClient(
                    f"ws://127.0.0.1:{proxy.port}", "chaos", client_id=f"c{k}", options=ROOM_OPTS
                )
                for k in range(rooms)
            ]
            await asyncio.gather(*(m.join() for m in members))
            members[0].edit(
                {"ot": "node.insert", "key": "", "path": "children", "value": {"key": "root"}}
            )
            members[0].commit()
            await members[0].synced()

            half = asyncio.Event()
            restarted = asyncio.Event()

            async def write(w: int) -> None:
                p = direct.producer(stream, content_type="application/json")
                for i in range(rounds):
                    await p.append(json.dumps([{"w": w, "i": i}]))
                    if w == 0 and i == rounds // 2:
                        half.set()
                    if i % 5 == 0:
                        await asyncio.sleep(0)

            async def edit(k: int) -> None:
                m = members[k]
                for i in range(rounds):
                    m.edit({"ot": "number.set", "key": "root", "path": f"c{k}", "value": i})
                    m.commit()
                    if i % 5 == 4:
                        await asyncio.sleep(0.01)

            async def crash() -> None:
                nonlocal srv
                await half.wait()
                srv.stop(signal.SIGKILL)
                srv = await asyncio.to_thread(ServerProc, "durasync", port=port, data_dir=data_dir)
                restarted.set()

            async with asyncio.timeout(limit):
                await asyncio.gather(
                    crash(), *(write(w) for w in range(writers)), *(edit(k) for k in range(rooms))
                )
                await direct.append(
                    stream, json.dumps([{"end": True}]), content_type="application/json", close=True
                )
                await asyncio.gather(*tail_tasks)
                await asyncio.gather(*(m.synced() for m in members))
                # Every member has seen everything: the same position (acks and
                # broadcasts arrive exactly once per connection after the state).
                await eventually(lambda: len({m.server_seq for m in members}) == 1, timeout=limit)

            # Streams: every tailer got the whole stream exactly once and in order.
            full: list[Any] = []
            offset = "-1"
            while True:
                b = await direct.read(stream, offset)
                full.extend(b.json())
                offset = b.next_offset
                if b.up_to_date:
                    break
            assert full[-1] == {"end": True}
            for w in range(writers):
                assert [m["i"] for m in full if m.get("w") == w] == list(range(rounds))
            assert len(full) == writers * rounds + 1
            for k in range(tailers):
                assert received[k] == full, f"tailer {k} differs"
            # Rooms: every replica equals the server's graph; nothing acked was lost.
            dumps = {m.replica.dump() for m in members}
            assert len(dumps) == 1
            for k, m in enumerate(members):
                assert m.graph.nodes["root"].props[f"c{k}"] == rounds - 1
            assert all(await asyncio.gather(*(m.check() for m in members)))
            await asyncio.gather(*(m.close() for m in members))
            assert restarted.is_set()
            return ChaosReport(tailers, rooms, len(full), proxy.stats.cut, proxy.stats.refused)
    finally:
        srv.stop()


async def test_chaos_tailers_and_rooms_survive_cuts_and_a_sigkill(tmp_path: Path) -> None:
    report = await run_chaos(tmp_path / "data", tailers=8, rooms=8, writers=3, rounds=40)
    assert report.messages == 3 * 40 + 1
    assert report.cuts > 0  # the proxy did cut connections
