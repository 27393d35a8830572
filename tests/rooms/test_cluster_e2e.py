"""Two real ``durasync serve --redis`` nodes on one real redis-server:
room clients spread over both converge to one graph; SIGKILL of one node mid-run loses nothing
acknowledged and its clients resume on the other; the dead node's members' presence expires
within the presence timeout on the surviving node."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from websockets.exceptions import ConnectionClosed

from durasync.client import ResilientOptions
from durasync.client.room import RoomClient
from durasync.protocol import BackoffPolicy
from helpers import ServerProcess, eventually, start_server
from redisproc import RedisServer

from .conftest import RoomConn, unique_room
from .test_e2e import random_op

PRESENCE_TIMEOUT = 2.0
FAST = ResilientOptions(
    backoff=BackoffPolicy(initial_delay=0.05, max_delay=0.3, min_delay=0.01, stable_after=0.2),
    connect_timeout=3.0,
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Redis (AOF, appendfsync always) + two nodes; everything stopped by PID afterwards."""
    with RedisServer(tmp_path) as redis:
        nodes: list[ServerProcess] = []
        try:
            for _ in range(2):
                nodes.append(
                    start_server(
                        "--port",
                        "0",
                        "--redis",
                        redis.url,
                        "--room-presence-timeout",
                        str(PRESENCE_TIMEOUT),
                        "--room-snapshot-every",
                        "40",
                    )
                )
            yield nodes
        finally:
            for n in nodes:
                n.stop()


def _ws(node: ServerProcess) -> str:
    return node.url.replace("http://", "ws://")


async def _keep_alive(*conns: RoomConn) -> None:
    """Heartbeats well inside the presence timeout (a live member never expires); ends when
    the connection does (the ghost's node is killed)."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            for c in conns:
                await c.send({"mtype": "heartbeat"})
            await asyncio.sleep(PRESENCE_TIMEOUT / 5)


async def test_two_nodes_converge_and_survive_sigkill(cluster: list[ServerProcess]) -> None:
    a, b = cluster
    room = unique_room("cluster")
    r = random.Random(11)
    # Raw connections: an observer on b and a "ghost" on a that never reconnects after the
    # kill (its presence must expire on b); both heartbeat while alive.
    obs = await RoomConn.open(b, room, "obs")
    await obs.recv_kind("state")
    ghost = await RoomConn.open(a, room, "ghost")
    await ghost.recv_kind("state")
    beat_obs = asyncio.create_task(_keep_alive(obs))
    beat_ghost = asyncio.create_task(_keep_alive(ghost))
    await ghost.send({"mtype": "presence", "state": {"cursor": 7}})

    async def presence_of(client: str, event: str, within: float) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                f = await obs.recv_kind("presence", timeout=within)
                if f.get("client") == client and f["event"] == event:
                    return f

    # Cross-node presence through Redis: a member on node a appears on node b with its state.
    seen = await presence_of("ghost", "update", 5)
    assert seen["state"] == {"cursor": 7}

    clients = [
        RoomClient([_ws(a), _ws(b)] if i % 2 == 0 else [_ws(b), _ws(a)], room, options=FAST)
        for i in range(4)
    ]
    on_a = [c for i, c in enumerate(clients) if i % 2 == 0]
    counter = [0]
    committed: list[str] = []
    try:
        for c in clients:
            await c.join()
        first = clients[0]
        first.edit({"ot": "node.insert", "key": "", "path": "children", "value": {"key": "scene"}})
        m0 = first.commit()
        assert m0 is not None
        committed.append(m0.id)
        await eventually(lambda: all(c.replica.has(m0.id) for c in clients), 10)

        async def author(c: RoomClient, steps: int) -> None:
            for _ in range(steps):
                for _ in range(r.randint(1, 3)):
                    c.edit(random_op(r, c.replica, c.client_id, counter, True))
                m = c.commit()
                if m is not None:
                    committed.append(m.id)
                await asyncio.sleep(r.uniform(0, 0.01))

        await asyncio.gather(*(author(c, 25) for c in clients))
        # GET /v1/rooms on either node counts the clients present on every node.
        async with httpx.AsyncClient(timeout=10) as http:
            for node in (a, b):
                listed = (await http.get(f"{node.url}/v1/rooms")).json()["rooms"]
                entry = next(x for x in listed if x["room"] == room)
                assert entry["clients"] == len(clients) + 2  # + obs and ghost
        # What is acknowledged now must survive the kill: committed minus unacked.
        unacked = {m.id for c in clients for m in c.unacked()}
        acked = [i for i in committed if i not in unacked]
        writers = [asyncio.create_task(author(c, 25)) for c in clients]
        await asyncio.sleep(0.05)  # mid-run: messages are in flight when the node dies
        a.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.gather(*writers)
        # Presence of the dead node's non-returning member expires on b within the timeout
        # (its entry is no longer refreshed); allow one refresh period and one sweep tick.
        left = await presence_of("ghost", "leave", PRESENCE_TIMEOUT * 3)
        assert left["reason"] == "expired"
        assert time.monotonic() - killed <= PRESENCE_TIMEOUT + 1.5
        # a's clients failed over to b and resent what was not acknowledged.
        async with asyncio.timeout(30):
            for c in clients:
                await c.synced()
        assert all(c.url == _ws(b) for c in on_a)
        async with httpx.AsyncClient(timeout=10) as http:

            async def server_seq() -> int:
                resp = await http.get(f"{b.url}/v1/rooms/{room}")
                return int(resp.headers["room-server-seq"])

            seq = await server_seq()
            await eventually(lambda: all(c.server_seq == seq for c in clients), 15)
            for c in clients:
                assert await c.check(), c.client_id
            graph = (await http.get(f"{b.url}/v1/rooms/{room}")).text
            raw = await http.get(f"{b.url}/v1/rooms/{room}/journal", params={"offset": "-1"})
        journal = msgspec.json.decode(raw.content)
        for c in clients:
            assert c.replica.dump() == graph, c.client_id
        # One order: seqs are the journal positions, no gap or duplicate; exactly once.
        ids = [rec["msg"]["id"] for rec in journal]
        seqs = [rec["serverSeq"] for rec in journal]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[-1] == seq
        assert len(ids) == len(set(ids))
        assert seqs[0] == 1  # retention (default 10,000) keeps everything here
        assert set(acked) <= set(ids)  # nothing acknowledged before the kill was lost
        assert set(committed) == set(ids)  # and every resend landed exactly once
    finally:
        beat_obs.cancel()
        beat_ghost.cancel()
        for c in clients:
            await c.close(grace=0.5)
        await obs.close()
        await ghost.ws.close()


async def test_redis_outage_stops_acks_then_recovers_without_duplicates(tmp_path: Path) -> None:
    """Split from Redis: no node acknowledges while Redis is down; after it returns (AOF,
    appendfsync always) the clients converge with every message journaled exactly once."""
    room = unique_room("split")
    with RedisServer(tmp_path) as redis:
        nodes = [start_server("--port", "0", "--redis", redis.url) for _ in range(2)]
        a, b = nodes
        clients = [
            RoomClient([_ws(a), _ws(b)], room, options=FAST),
            RoomClient([_ws(b), _ws(a)], room, options=FAST),
        ]
        committed: list[str] = []
        try:
            for c in clients:
                await c.join()
            for i, c in enumerate(clients):
                c.edit({"ot": "number.add", "key": "", "path": f"n{i}", "value": 1})
                m = c.commit()
                assert m is not None
                committed.append(m.id)
            async with asyncio.timeout(10):
                for c in clients:
                    await c.synced()
            redis.kill()
            for step in range(10):
                for i, c in enumerate(clients):
                    c.edit({"ot": "number.add", "key": "", "path": f"n{i}", "value": step})
                    m = c.commit()
                    assert m is not None
                    committed.append(m.id)
            # Nothing can be acknowledged without the store.
            await asyncio.sleep(0.5)  # a window in which an ack would be a bug
            assert all(c.unsynced == 10 for c in clients)
            redis.start()
            async with asyncio.timeout(30):
                for c in clients:
                    await c.synced()
            async with httpx.AsyncClient(timeout=10) as http:
                raw = await http.get(f"{b.url}/v1/rooms/{room}/journal", params={"offset": "-1"})
                graph = (await http.get(f"{b.url}/v1/rooms/{room}")).text
                seq = int((await http.get(f"{b.url}/v1/rooms/{room}")).headers["room-server-seq"])
            journal = msgspec.json.decode(raw.content)
            assert [rec["serverSeq"] for rec in journal] == list(range(1, len(committed) + 1))
            assert sorted(rec["msg"]["id"] for rec in journal) == sorted(committed)
            await eventually(lambda: all(c.server_seq == seq for c in clients), 15)
            for c in clients:
                assert c.replica.dump() == graph
        finally:
            for c in clients:
                await c.close(grace=0.5)
            for n in nodes:
                n.stop()
