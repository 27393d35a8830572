"""P2P benchmark: connect time through our rendezvous vs rondevu's polling, and a durable
channel's throughput/latency vs a bare aiortc data channel, side by side in one run.

    .venv/bin/python bench/p2p.py [--connects 20] [--messages 5000] [--size 1024]

Everything runs on loopback (host candidates pinned to 127.0.0.1, no STUN); a
``durasync serve --memory`` subprocess is the rendezvous server; both peers run in this
process, so each side of every comparison gets the same CPU.

(1) Connect time, ``--connects`` times each, sequentially, a fresh connecting peer each time
starting after a random 0-2 s pause (so clients arrive at uniformly random moments of the
polling host's cycle), timed from "start connecting" to "peer connection up and its control
channel open":

- ``durasync``: :class:`DurableService` (pool of 2) and :class:`DurableConnection`; the host
  waits for answers on the owner feed's long-poll (woken by the answer's append).
- ``rondevu-style``: the same rendezvous API and the same aiortc peers, driven the way
  rondevu 0.9 drives them: the host polls for answers every 2 s, the connecting side polls the
  host's ICE candidates every 1 s (shared/reference/rondevu.md §5.1, §5.4).

(2) ``--messages`` ordered messages of ``--size`` bytes one way, as fast as flow control allows
(both sides stop writing above 128 KiB ``bufferedAmount`` and resume below 32 KiB): throughput
until the last one arrived. Then 2 s at 500 messages/s: one-way latency p50/p99 (the sender's
monotonic clock in the message; both peers share the clock). ``bare``: one RTCDataChannel
between two RTCPeerConnections; ``durable``: a :class:`DurableChannel` (reliable session:
sequence numbers, acks, replay buffer) over the same kind of link; both count arrivals in a
message callback. ``--reps`` alternating runs of each; medians of the rates, latencies pooled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from durasync.p2p import (  # noqa: E402
    ConnectionOptions,
    DurableConnection,
    DurableService,
    Identity,
    ServiceOptions,
)
from durasync.p2p.client import RendezvousClient, RendezvousError  # noqa: E402
from durasync.p2p.rtc import DataChannel, PeerLink, limit_host_addresses  # noqa: E402
from helpers import start_server  # noqa: E402

FQN = "org.bench.p2p@1.0.0"
HIGH, LOW = 128 << 10, 32 << 10  # the DurableChannel defaults (ChannelOptions)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ----------------------------------------------------------------------------- connect time


async def connect_ours(url: str, n: int) -> list[float]:
    options = ConnectionOptions(heartbeat_interval=0.5, heartbeat_timeout=3.0)
    service = DurableService(
        url,
        username="bench-ours",
        identity=Identity.generate(),
        service_fqn=FQN,
        options=ServiceOptions(pool_size=2, connection=options),
    )
    await service.start()
    times: list[float] = []
    try:
        for _ in range(n):
            await asyncio.sleep(random.uniform(0, 2.0))  # same start phases as the polling run
            conn = DurableConnection(url, username="bench-ours", service_fqn=FQN, options=options)
            started = time.perf_counter()
            await conn.connect()
            times.append(time.perf_counter() - started)
            await conn.close(0.5)
    finally:
        await service.close()
    return times


class PollingHost:
    """rondevu 0.9's host loop on our API: answers polled every ``interval`` s."""

    def __init__(self, url: str, interval: float) -> None:
        self.client = RendezvousClient(url, identity=Identity.generate())
        self.interval = interval
        self.pool: dict[str, PeerLink] = {}
        self.live: list[PeerLink] = []
        self.uuid = ""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.claim("bench-poll")
        links = [PeerLink() for _ in range(2)]
        sdps = [await link.make_offer() for link in links]
        pub = await self.client.publish("bench-poll", FQN, sdps)
        self.uuid = pub.uuid
        self.pool = dict(zip(pub.offer_ids, links, strict=True))
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        since = "-1"
        while True:
            events = await self.client.owner_events("bench-poll", since, wait=0)
            since = events.next
            for answer in events.answers:
                link = self.pool.pop(answer.offer_id, None)
                if link is not None:
                    await link.accept_answer(answer.sdp)
                    self.live.append(link)
            while len(self.pool) < 2:
                link = PeerLink()
                (oid,) = await self.client.add_offers(self.uuid, [await link.make_offer()])
                self.pool[oid] = link
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for link in [*self.pool.values(), *self.live]:
            await link.close()
        with contextlib.suppress(RendezvousError):
            await self.client.unpublish(self.uuid)
        await self.client.aclose()


async def connect_polling(url: str, n: int) -> list[float]:
    host = PollingHost(url, interval=2.0)
    await host.start()
    client = RendezvousClient(url)
    times: list[float] = []
    try:
        for _ in range(n):
            # A client arrives at a random moment of the host's 2 s poll cycle.
            await asyncio.sleep(random.uniform(0, 2.0))
            started = time.perf_counter()
            while True:
                found = await client.discover(username="bench-poll", fqn=FQN)
                if found.offer_id is not None and found.offer_sdp is not None:
                    break
                await asyncio.sleep(1.0)  # rondevu: 503 "no available offers", try later
            link = PeerLink()
            token = await client.answer(
                found.uuid, found.offer_id, await link.make_answer(found.offer_sdp)
            )
            up = asyncio.create_task(link_up(link))
            since = "-1"
            while not up.done():
                cands, since = await client.offerer_candidates(
                    found.uuid, found.offer_id, token, since
                )
                for cand in cands:
                    await link.add_remote_candidate(cand)
                await asyncio.wait({up}, timeout=1.0)  # the 1 s ICE-candidate poll
            times.append(time.perf_counter() - started)
            await link.close()
    finally:
        await client.aclose()
        await host.close()
    return times


async def link_up(link: PeerLink) -> None:
    """Until the peer connection is up and its control channel open."""
    await link.connected.wait()
    await link.control_ready.wait()
    control = link.control
    assert control is not None
    if not control.is_open:
        opened = asyncio.Event()
        control.on_open = opened.set
        if not control.is_open:
            await opened.wait()


# ----------------------------------------------------------------------------- throughput


async def bare_pair() -> tuple[PeerLink, PeerLink, DataChannel, DataChannel]:
    a, b = PeerLink(), PeerLink()
    offer = await a.make_offer()
    await a.accept_answer(await b.make_answer(offer))
    await link_up(a)
    await link_up(b)
    assert a.control is not None and b.control is not None
    return a, b, a.control, b.control


async def run_bare(n: int, size: int) -> tuple[float, list[float]]:
    a, b, tx, rx = await bare_pair()
    got = asyncio.Event()
    phase: dict[str, int] = {"count": 0, "target": n}
    lat: list[float] = []
    measuring = False

    def on_message(data: str | bytes) -> None:
        assert isinstance(data, bytes)
        phase["count"] += 1
        if measuring:
            lat.append(time.monotonic() - struct.unpack_from("d", data)[0])
        if phase["count"] == phase["target"]:
            got.set()

    rx.on_message = on_message
    low = asyncio.Event()
    tx.set_low_threshold(LOW)
    tx.on_buffered_low = low.set

    async def send(data: bytes) -> None:
        while tx.buffered_amount > HIGH:
            low.clear()
            await low.wait()
        tx.send(data)

    pad = b"x" * (size - 8)
    started = time.perf_counter()
    for _ in range(n):
        await send(struct.pack("d", time.monotonic()) + pad)
    await got.wait()
    rate = n / (time.perf_counter() - started)
    got.clear()
    measuring = True
    phase.update(count=0, target=await paced(send, size))
    await paced(send, size, count_only=False)
    await asyncio.wait_for(got.wait(), 30)
    await a.close()
    await b.close()
    return rate, lat


async def paced(
    send: Callable[[bytes], Awaitable[None]],
    size: int,
    *,
    count_only: bool = True,
    rate: int = 500,
    seconds: float = 2.0,
) -> int:
    """Send ``rate`` messages/s for ``seconds`` (or only say how many with ``count_only``)."""
    total = int(rate * seconds)
    if count_only:
        return total
    pad = b"x" * (size - 8)
    start = time.monotonic()
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(struct.pack("d", time.monotonic()) + pad)
    return total


async def run_durable(url: str, n: int, size: int) -> tuple[float, list[float]]:
    options = ConnectionOptions(heartbeat_interval=0.5, heartbeat_timeout=5.0)
    got = asyncio.Event()
    phase: dict[str, int] = {"count": 0, "target": n}
    lat: list[float] = []
    measuring = False

    def on_message(data: str | bytes) -> None:
        assert isinstance(data, bytes)
        phase["count"] += 1
        if measuring:
            lat.append(time.monotonic() - struct.unpack_from("d", data)[0])
        if phase["count"] == phase["target"]:
            got.set()

    user = f"bench-tp-{random.randrange(10**6)}"
    service = DurableService(
        url,
        username=user,
        identity=Identity.generate(),
        service_fqn=FQN,
        options=ServiceOptions(pool_size=1, connection=options),
        # a message callback, as the bare side counts in its data channel's callback
        handler=lambda channel, connection_id: channel.on("message", on_message) and None,
    )
    await service.start()
    conn = DurableConnection(url, username=user, service_fqn=FQN, options=options)
    channel = conn.create_channel("bench")
    await conn.connect()
    pad = b"x" * (size - 8)
    started = time.perf_counter()
    for _ in range(n):
        await channel.write(struct.pack("d", time.monotonic()) + pad)
    await got.wait()
    rate = n / (time.perf_counter() - started)
    got.clear()
    measuring = True
    phase.update(count=0, target=await paced(channel.write, size))
    await paced(channel.write, size, count_only=False)
    await asyncio.wait_for(got.wait(), 30)
    await conn.close(1.0)
    await service.close()
    return rate, lat


# ----------------------------------------------------------------------------- main


async def main(args: argparse.Namespace) -> None:
    limit_host_addresses(["127.0.0.1"])
    server = start_server("--port", "0", "--memory")
    try:
        now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        print(
            f"# bench/p2p.py  {now}  "
            f"load {os.getloadavg()[0]:.1f}  connects={args.connects} "
            f"messages={args.messages} size={args.size}"
        )
        ours = await connect_ours(server.url, args.connects)
        poll = await connect_polling(server.url, args.connects)
        print("\n| connect time | p50 ms | p99 ms | mean ms |")
        print("|---|---:|---:|---:|")
        for name, t in (
            ("durasync (pushed answers)", ours),
            ("rondevu-style polling (2 s / 1 s)", poll),
        ):
            print(
                f"| {name} | {pct(t, 0.5) * 1e3:.0f} | {pct(t, 0.99) * 1e3:.0f} "
                f"| {statistics.mean(t) * 1e3:.0f} |"
            )
        print(f"\np50 ratio: {pct(poll, 0.5) / pct(ours, 0.5):.1f}x faster (target >= 10x)")
        # Alternate the two sides (a loaded machine drifts); medians of the runs.
        bare_runs: list[tuple[float, list[float]]] = []
        dur_runs: list[tuple[float, list[float]]] = []
        for _ in range(args.reps):
            bare_runs.append(await run_bare(args.messages, args.size))
            dur_runs.append(await run_durable(server.url, args.messages, args.size))
        bare_rate = statistics.median(r for r, _ in bare_runs)
        dur_rate = statistics.median(r for r, _ in dur_runs)
        bare_lat = [x for _, lat in bare_runs for x in lat]
        dur_lat = [x for _, lat in dur_runs for x in lat]
        print(
            f"\nruns (msgs/s): bare {[round(r) for r, _ in bare_runs]}, "
            f"durable {[round(r) for r, _ in dur_runs]}"
        )
        print(f"\n| {args.size}-byte messages | msgs/s | MB/s | latency p50 ms @500/s | p99 ms |")
        print("|---|---:|---:|---:|---:|")
        for name, rate, lat in (
            ("bare aiortc data channel", bare_rate, bare_lat),
            ("DurableChannel", dur_rate, dur_lat),
        ):
            print(
                f"| {name} | {rate:,.0f} | {rate * args.size / 1e6:.2f} "
                f"| {pct(lat, 0.5) * 1e3:.2f} | {pct(lat, 0.99) * 1e3:.2f} |"
            )
        print(f"\nthroughput ratio durable/bare: {dur_rate / bare_rate:.2f}x (target >= 0.7x)")
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connects", type=int, default=20)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3, help="alternating throughput runs")
    asyncio.run(main(parser.parse_args()))
