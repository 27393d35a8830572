"""Trickled ICE candidates (what a browser peer sends), both ways, through the rendezvous.

aiortc puts its candidates in the SDP; a browser trickles them. Here the scripted side strips
its candidates from its SDP and posts them to the candidate endpoints instead, so the durasync
peer on the other side connects only through the trickled ones (checked: the remote candidate
it knows is a ``host`` candidate, which only the trickle carried)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from durasync.p2p import (
    ConnectionOptions,
    DurableConnection,
    DurableService,
    Identity,
    ServiceOptions,
)
from durasync.p2p.client import RendezvousClient
from durasync.p2p.rtc import PeerLink, limit_host_addresses
from durasync.store import MemoryStore

from .conftest import serve

FQN = "com.example.trickle@1.0.0"
OPTIONS = ConnectionOptions(heartbeat_interval=0.25, heartbeat_timeout=3.0, connection_timeout=15)


def strip_candidates(sdp: str) -> tuple[str, list[str]]:
    lines = sdp.split("\r\n")
    cands = [ln.removeprefix("a=") for ln in lines if ln.startswith("a=candidate:")]
    kept = [ln for ln in lines if not ln.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(kept), cands


@pytest.fixture(autouse=True)
def loopback() -> Iterator[None]:
    limit_host_addresses(["127.0.0.1"])
    yield
    limit_host_addresses(None)


async def test_connecting_side_uses_the_hosts_trickled_candidates() -> None:
    async with serve(MemoryStore()) as (url, _):
        owner = RendezvousClient(url, identity=Identity.generate())
        link = PeerLink()
        offer, cands = strip_candidates(await link.make_offer())
        assert cands and "a=candidate" not in offer
        await owner.claim("browser")
        pub = await owner.publish("browser", FQN, [offer])
        conn = DurableConnection(url, uuid=pub.uuid, options=OPTIONS)
        connecting = asyncio.create_task(conn.connect())
        try:
            async with asyncio.timeout(20):
                events = await owner.owner_events("browser", "-1", wait=10)
                while not events.answers:
                    events = await owner.owner_events("browser", events.next, wait=10)
                await link.accept_answer(events.answers[0].sdp)
                await owner.add_offerer_candidates(pub.uuid, pub.offer_ids[0], cands)
                await connecting
                assert conn._link is not None
                assert "host" in conn._link.remote_candidate_types()
        finally:
            await conn.close(0.5)
            await link.close()
            await owner.aclose()


async def test_host_uses_the_answerers_trickled_candidates() -> None:
    async with serve(MemoryStore()) as (url, _):
        service = DurableService(
            url,
            username="robot",
            identity=Identity.generate(),
            service_fqn=FQN,
            options=ServiceOptions(connection=OPTIONS),
        )
        connected: list[str] = []
        service.on("connection", connected.append)
        await service.start()
        peer = RendezvousClient(url)
        link = PeerLink()
        try:
            async with asyncio.timeout(20):
                found = await peer.discover(username="robot", fqn=FQN, wait=5)
                assert found.offer_id is not None and found.offer_sdp is not None
                answer, cands = strip_candidates(await link.make_answer(found.offer_sdp))
                token = await peer.answer(found.uuid, found.offer_id, answer)
                await peer.add_answerer_candidates(found.uuid, found.offer_id, token, cands)
                await link.connected.wait()
                await link.control_ready.wait()
                assert link.control is not None
                opened = asyncio.Event()
                link.control.on_open = opened.set
                if not link.control.is_open:
                    await opened.wait()
                link.control.send('{"t":"hello","connection":"browser-tab-1"}')
                for _ in range(500):
                    if connected:
                        break
                    await asyncio.sleep(0.01)
                assert connected == ["browser-tab-1"]
                (host_peer,) = service._peers
                assert "host" in host_peer.link.remote_candidate_types()
        finally:
            await link.close()
            await peer.aclose()
            await service.close()
