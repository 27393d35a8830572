"""Two ``durasync serve --redis`` nodes on one redis-server act as one rendezvous."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from durasync.p2p import ConnectionOptions, DurableConnection
from durasync.p2p.client import RendezvousClient, RendezvousError
from durasync.p2p.identity import Identity
from durasync.p2p.rtc import limit_host_addresses
from helpers import ServerProcess
from redisproc import RedisServer

from .test_peers_e2e import FQN, Host

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"


@pytest.fixture(scope="module")
def nodes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as redis:
        a = ServerProcess(["--port", "0", "--redis", redis.url])
        try:
            b = ServerProcess(["--port", "0", "--redis", redis.url])
        except BaseException:
            a.stop()
            raise
        try:
            yield a, b
        finally:
            assert b.stop() == 0
            assert a.stop() == 0


async def test_publish_on_a_discover_and_answer_on_b_pushes_to_a(nodes) -> None:
    a, b = nodes
    owner = RendezvousClient(a.url, identity=Identity.generate())
    via_b = RendezvousClient(b.url)
    try:
        await owner.claim("carol")
        pub = await owner.publish("carol", FQN, [SDP + "a=x:1\r\n", SDP + "a=x:2\r\n"])
        found = await via_b.discover(username="carol", fqn=FQN)
        assert found.uuid == pub.uuid and found.offer_id in pub.offer_ids
        assert (await via_b.discover(uuid=pub.uuid)).uuid == pub.uuid
        first = await owner.owner_events("carol", "-1")
        waiting = asyncio.create_task(owner.owner_events("carol", first.next, wait=20))
        await asyncio.sleep(0.1)
        # both nodes race for the same offer: exactly one answer wins
        oid = pub.offer_ids[0]
        results = await asyncio.gather(
            via_b.answer(pub.uuid, oid, SDP + "a=answer:b\r\n"),
            RendezvousClient(a.url).answer(pub.uuid, oid, SDP + "a=answer:a\r\n"),
            return_exceptions=True,
        )
        assert sum(isinstance(r, str) for r in results) == 1
        assert [r.status for r in results if isinstance(r, RendezvousError)] == [409]
        events = await asyncio.wait_for(waiting, 10)  # woken through Redis, not by the timeout
        assert [e.offer_id for e in events.answers] == [oid]
        # node B agrees the offer is gone from discovery; a refresh through B keeps the UUID
        for _ in range(5):
            assert (await via_b.discover(uuid=pub.uuid)).offer_id == pub.offer_ids[1]
        refresher = RendezvousClient(b.url, identity=owner.identity)
        await refresher.refresh(pub.uuid)
        await refresher.aclose()
        # a key that is not carol's is refused on either node
        with pytest.raises(RendezvousError) as err:
            await RendezvousClient(b.url, identity=Identity.generate()).claim("carol")
        assert err.value.status == 409
    finally:
        await owner.aclose()
        await via_b.aclose()


async def test_host_through_a_peer_through_b(nodes, tmp_path: Path) -> None:
    a, b = nodes
    limit_host_addresses(["127.0.0.1"])
    host = Host(a.url, tmp_path / "dave.key", pool=1, user="dave")
    conn = DurableConnection(
        b.url,
        username="dave",
        service_fqn=FQN,
        options=ConnectionOptions(heartbeat_interval=0.25, heartbeat_timeout=1.5),
    )
    channel = conn.create_channel("chat")
    try:
        async with asyncio.timeout(30):
            await conn.connect()
            await channel.write("across nodes")
            assert await channel.receive() == "across nodes"
    finally:
        await conn.close(1.0)
        host.stop(signal.SIGKILL)
        limit_host_addresses(None)
