"""Node failover: SIGKILL a node mid-run; nothing acknowledged is lost, clients go on.

A writer (idempotent producer, DS §3) appends through node A and a live SSE reader tails the
stream on node A too. Node A is SIGKILLed mid-run; both clients move to node B (what a load
balancer does for them) and continue from where they were: the writer resends its unacked
append with the same producer seq, the reader resumes from its last offset. The stream then
holds every message exactly once, in order, and the reader saw exactly that sequence.
"""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest

from helpers import eventually
from redisproc import RedisServer

from .conftest import start_node, stop_node

N_MESSAGES = 80
HEADERS = {"content-type": "application/json"}


class FailoverWriter:
    def __init__(self, client: httpx.AsyncClient, urls: list[str]) -> None:
        self.client = client
        self.urls = urls
        self.node = 0
        self.acked = 0

    async def run(self, path: str) -> None:
        for seq in range(N_MESSAGES):
            headers = {
                **HEADERS,
                "producer-id": "failover-writer",
                "producer-epoch": "0",
                "producer-seq": str(seq),
            }
            while True:
                try:
                    r = await self.client.post(
                        self.urls[self.node] + path, content=json.dumps({"n": seq}), headers=headers
                    )
                except httpx.TransportError:
                    self.node = (self.node + 1) % len(self.urls)  # the balancer moves us
                    continue
                assert r.status_code in (200, 204), (r.status_code, r.text)
                self.acked += 1
                break
            await asyncio.sleep(0.005)


class FailoverReader:
    def __init__(self, client: httpx.AsyncClient, urls: list[str]) -> None:
        self.client = client
        self.urls = urls
        self.node = 0
        self.seen: list[int] = []
        self.offset = "-1"

    async def run(self, path: str) -> None:
        while len(self.seen) < N_MESSAGES:
            params = {"offset": self.offset, "live": "sse"}
            try:
                async with self.client.stream(
                    "GET", self.urls[self.node] + path, params=params
                ) as sse:
                    assert sse.status_code == 200
                    event = ""
                    async for line in sse.aiter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:") and event == "data":
                            self.seen.extend(m["n"] for m in json.loads(line[5:]))
                        elif line.startswith("data:") and event == "control":
                            self.offset = json.loads(line[5:])["streamNextOffset"]
                        if len(self.seen) >= N_MESSAGES:
                            return
            except (httpx.TransportError, httpx.RemoteProtocolError):
                self.node = (self.node + 1) % len(self.urls)


@pytest.mark.timeout(90)
async def test_sigkill_a_node_mid_run_loses_nothing_and_clients_continue_on_the_other(
    redis_server: RedisServer,
) -> None:
    a = await asyncio.to_thread(start_node, redis_server.url)
    b = await asyncio.to_thread(start_node, redis_server.url)
    path = "/v1/stream/failover"
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.put(a.url + path, headers=HEADERS)).status_code == 201
            writer = FailoverWriter(client, [a.url, b.url])
            reader = FailoverReader(client, [a.url, b.url])
            tasks = [
                asyncio.create_task(writer.run(path)),
                asyncio.create_task(reader.run(path)),
            ]
            await eventually(
                lambda: writer.acked >= N_MESSAGES // 3 and len(reader.seen) > 0, timeout=30
            )
            await asyncio.to_thread(a.stop, signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
            assert writer.node == 1 and reader.node == 1  # both really moved to B
            assert reader.seen == list(range(N_MESSAGES))
            r = await client.get(b.url + path, params={"offset": "-1"})
            assert [m["n"] for m in r.json()] == list(range(N_MESSAGES))
    finally:
        await asyncio.to_thread(stop_node, b)
        a.stop(signal.SIGKILL)
