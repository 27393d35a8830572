"""DurableService against an in-process server with short TTLs: refresh keeps the UUID."""

from __future__ import annotations

import asyncio

from durasync.p2p import DurableService, Identity, ServiceOptions
from durasync.p2p.client import RendezvousClient
from durasync.p2p.rendezvous import RendezvousSettings
from durasync.store import MemoryStore

from .conftest import serve

FQN = "com.example.ttl@1.0.0"


async def test_ttl_refreshed_at_80_percent_keeps_uuid_and_service_alive() -> None:
    settings = RendezvousSettings(min_ttl=1.0, default_ttl=1.0)
    async with serve(MemoryStore(), settings) as (url, _):
        service = DurableService(
            url,
            username="ttl",
            identity=Identity.generate(),
            service_fqn=FQN,
            options=ServiceOptions(ttl=1.0, pool_size=2),
        )
        published: list[str] = []
        refreshed: list[float] = []
        service.on("published", lambda uuid, expires_at: published.append(uuid))
        service.on("ttl-refreshed", refreshed.append)
        await service.start()
        try:
            async with RendezvousClient(url) as anyone:
                async with asyncio.timeout(20):
                    while len(refreshed) < 4:  # 4 refreshes: 4 TTLs later
                        found = await anyone.discover(uuid=published[0])
                        assert found.uuid == published[0] and found.offer_id is not None
                        await asyncio.sleep(0.2)
                assert refreshed == sorted(refreshed)
                assert published == [published[0]]  # never republished: one UUID
                assert (await anyone.discover(username="ttl", fqn=FQN)).uuid == published[0]
        finally:
            await service.close()
        async with RendezvousClient(url) as anyone:
            found = await anyone.user("ttl")
            assert found["available"] is False  # the name stays claimed after close
