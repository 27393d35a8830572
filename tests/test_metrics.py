"""``GET /metrics`` (durasync/metrics.py): scraped with prometheus_client's parser while a real
server sees the traffic the test makes: appends, a long-poll and an SSE reader, room members,
a rate-limited frame; and a slow consumer dropped in-process (tests/rooms for the real-socket
version of that drop). Labels stay bounded: no stream path or room name becomes a label."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from durasync.cli import resolve_serve_args
from durasync.metrics import Metrics
from durasync.protocol.closecodes import CloseCode
from durasync.rooms.room import Member, Room, RoomSettings
from durasync.store.memory import MemoryStore
from helpers import ServerProcess, start_server
from opsutil import await_for, parse, scrape, value
from rooms.conftest import RoomConn, unique_room
from rooms.test_e2e import msg


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Embedded store (commits are fsync'd group commits), room rate 4/s (burst 8)."""
    data = tmp_path_factory.mktemp("metrics") / "data"
    proc = start_server(
        "--port", "0", "--data", str(data), "--long-poll-timeout", "5", "--room-rate", "4"
    )  # fmt: skip
    try:
        yield proc
    finally:
        assert proc.stop() == 0, "".join(proc.output[-30:])
    # At the default log level (warning) no access line is written.
    assert not [line for line in proc.output if "durasync.access" in line]


async def test_appends_and_live_readers_move_the_stream_metrics(server: ServerProcess) -> None:
    url = server.url
    before = scrape(url)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        created = await client.put("/v1/stream/m/one", headers={"content-type": "application/json"})
        assert created.status_code == 201
        for i in range(3):
            r = await client.post(
                "/v1/stream/m/one",
                content=f"[{i}, {i}]",
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 204
        missing = await client.post(
            "/v1/stream/m/none", content="[1]", headers={"content-type": "application/json"}
        )
        assert missing.status_code == 404

        # One SSE reader and one long-poll: the gauges count them while they are open.
        async def sse() -> None:
            async with client.stream("GET", "/v1/stream/m/one?offset=now&live=sse") as resp:
                assert resp.status_code == 200
                async for _ in resp.aiter_bytes():
                    pass

        async def long_poll() -> int:
            r = await client.get("/v1/stream/m/one?offset=now&live=long-poll")
            return r.status_code

        sse_task = asyncio.create_task(sse())
        poll_task = asyncio.create_task(long_poll())

        async def both_open() -> bool:
            s = parse((await client.get("/metrics")).text)
            return (
                value(s, "durasync_open_sse_streams") == 1
                and value(s, "durasync_open_long_polls") == 1
            )

        await await_for(both_open)
        r = await client.post(
            "/v1/stream/m/one", content="[9]", headers={"content-type": "application/json"}
        )
        assert r.status_code == 204
        assert await asyncio.wait_for(poll_task, 10) == 200
        sse_task.cancel()
        await asyncio.gather(sse_task, return_exceptions=True)

        async def readers_gone() -> bool:
            s = parse((await client.get("/metrics")).text)
            return (
                value(s, "durasync_open_sse_streams") == 0
                and value(s, "durasync_open_long_polls") == 0
            )

        await await_for(readers_gone)

    after = scrape(url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("durasync_stream_appends_total") == 4
    assert delta("durasync_stream_appended_messages_total") == 7
    assert delta("durasync_stream_appended_bytes_total") == 3 * len("[0, 0]") + len("[9]")
    assert delta("durasync_streams_created_total") == 1
    assert delta("durasync_errors_total", layer="streams", code="NOT_FOUND") == 1
    stream_route = "/v1/stream/{path}"
    # PUT, 4 POSTs, the long-poll and the SSE response.
    assert delta("durasync_http_requests_total", route=stream_route, status="2xx") == 7
    assert delta("durasync_http_requests_total", route=stream_route, status="4xx") == 1
    # The embedded store's group commits: latency and batch size histograms moved.
    assert delta("durasync_store_commit_seconds_count") >= 5
    assert delta("durasync_store_commit_seconds_sum") > 0
    assert delta("durasync_store_commit_batch_size_count") >= 5
    assert delta("durasync_store_commit_batch_size_sum") >= 5
    # Bounded labels: no stream path in any label value.
    for _, labels in after:
        for _, label_value in labels:
            assert "m/one" not in label_value and "m/none" not in label_value


async def test_room_members_and_a_rate_limited_frame_move_the_room_metrics(
    server: ServerProcess,
) -> None:
    room = unique_room("metrics")
    before = scrape(server.url)
    a = await RoomConn.open(server, room, "a")
    await a.recv_kind("state")
    b = await RoomConn.open(server, room, "b")
    await b.recv_kind("state")
    opened = scrape(server.url)
    assert value(opened, "durasync_open_websockets") == 2
    assert value(opened, "durasync_room_members") >= 2
    assert value(opened, "durasync_rooms_loaded") >= 1

    await a.send({"mtype": "crdt", "msg": msg("a", 1)})
    await a.recv_kind("ack")
    assert (await b.recv_kind("broadcast"))["serverSeq"] == 1

    # 4 frames/s, burst 8: 20 frames at once cannot all pass.
    for _ in range(20):
        await b.send({"mtype": "heartbeat"})
    while (await b.recv_kind("error", timeout=10))["code"] != "RATE_LIMITED":
        pass
    after = scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("durasync_room_messages_sequenced_total") == 1
    assert delta("durasync_room_frames_relayed_total") >= 1
    assert delta("durasync_room_rate_limited_frames_total") >= 1
    assert delta("durasync_errors_total", layer="rooms", code="RATE_LIMITED") >= 1
    for _, labels in after:
        assert all(room not in label_value for _, label_value in labels)

    await a.close()
    await b.close()

    def closed() -> bool:
        return value(scrape(server.url), "durasync_open_websockets") == 0

    await await_for(lambda: asyncio.to_thread(closed))


async def test_a_slow_consumer_drop_is_counted() -> None:
    """A member whose sends never complete overflows its queue: dropped (4008) and counted."""
    metrics = Metrics()
    store = MemoryStore()
    await store.open()
    try:
        room = await Room.load("slow", store, RoomSettings(), create=True)
        room.metrics = metrics
        blocked = asyncio.Event()
        closes: list[int] = []

        async def never_sends(data: bytes, fmt: Any) -> None:
            await blocked.wait()

        async def close(code: int, reason: str) -> None:
            closes.append(code)

        member = Member("slow", "msgpack", send=never_sends, close=close, limit=1000)
        room.join(member, since=None, epoch=None, now=0.0)
        frame = {"msgpack": b"x" * 600, "json": b"x" * 600}
        for _ in range(4):
            room.send_all(frame)
        assert member.closed and member.close_code == CloseCode.RESUME
        await await_for(lambda: closes == [CloseCode.RESUME])
        body, _ = metrics.exposition()
        samples = parse(body.decode())
        assert value(samples, "durasync_room_slow_consumer_disconnects_total") == 1
        blocked.set()
        await member.stop()
        await room.close()
    finally:
        await store.close()


def test_metrics_off_serves_no_endpoint(tmp_path: Path) -> None:
    proc = start_server("--port", "0", "--memory", "--no-metrics")
    try:
        assert httpx.get(proc.url + "/metrics", timeout=5).status_code == 404
        assert httpx.get(proc.url + "/readyz", timeout=5).status_code == 200
    finally:
        assert proc.stop() == 0
    # The config file key is the flag's name.
    config = tmp_path / "serve.toml"
    config.write_text("memory = true\nno-metrics = true\n")
    args = resolve_serve_args(["--config", str(config)], {})
    assert args.no_metrics is True
    assert resolve_serve_args([], {}).no_metrics is False


def test_error_code_labels_are_bounded() -> None:
    metrics = Metrics()
    for i in range(200):
        metrics.error("streams", f"CODE_{i}")
    metrics.error("streams", "not a code: /secret/path")
    body, _ = metrics.exposition()
    codes = collections.Counter(
        dict(labels)["code"]
        for (name, labels) in parse(body.decode())
        if name == "durasync_errors_total"
    )
    assert len(codes) <= 65
    assert codes["OTHER"] == 1
    assert all("/" not in code for code in codes)
