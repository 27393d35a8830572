"""Interop: clients we did not write drive the server.

- the npm ``@durable-streams/client`` through ``tests/js/interop.mjs``;
- the PyPI ``durable-streams`` client, in-process.

Each covers append, catch-up, long-poll, SSE tail and resume from offset. The
same tests run against our server (memory and ``--data``) and the npm
reference server (memory and file), so a behaviour we differ on is visible.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from typing import Any

import pytest
from durable_streams import AsyncDurableStream, astream

from .conftest import JS_DIR, ServerProc

pytestmark = pytest.mark.timeout(60)


def _url(server: ServerProc, name: str) -> str:
    return f"{server.url}/v1/stream/interop-{uuid.uuid4().hex[:10]}-{name}"


def test_npm_client_scenario(server: ServerProc) -> None:
    prefix = f"npm-{uuid.uuid4().hex[:10]}"
    proc = subprocess.run(
        ["node", str(JS_DIR / "interop.mjs"), server.url, prefix],
        cwd=JS_DIR,
        capture_output=True,
        timeout=45,
        check=False,
    )
    out = proc.stdout.decode().strip().splitlines()
    assert out, f"no report from interop.mjs: {proc.stderr.decode()[-2000:]}"
    results: dict[str, dict[str, Any]] = json.loads(out[-1])
    expected = {
        "create_append_catchup",
        "resume_from_offset",
        "long_poll_tail",
        "sse_tail",
        "sse_catchup_from_start",
        "text_stream_bytes",
        "idempotent_producer",
        "close_and_observe",
    }
    assert set(results) == expected
    failed = {name: r for name, r in results.items() if not r.get("ok")}
    assert not failed, json.dumps(failed, indent=1)[:4000]
    assert proc.returncode == 0


async def _tail(url: str, offset: str, live: str, items: list[Any]) -> list[Any]:
    """Start a live session at ``offset``, then append ``items``; return what arrived."""
    got: list[Any] = []
    async with astream(url, offset=offset, live=live, timeout=10.0) as res:  # type: ignore[arg-type]

        async def consume() -> None:
            async for item in res.iter_json():
                got.append(item)
                if len(got) >= len(items):
                    return

        reader = asyncio.create_task(consume())
        async with AsyncDurableStream(url, content_type="application/json") as writer:
            # Give the session time to park at the tail so delivery is live;
            # correctness does not depend on it (the session starts at offset).
            await asyncio.sleep(0.2)
            for item in items:
                await writer.append(item)
        async with asyncio.timeout(15):
            await reader
    return got


async def test_python_client_append_catchup_resume(server: ServerProc) -> None:
    url = _url(server, "py-json")
    handle = await AsyncDurableStream.create(url, content_type="application/json")
    async with handle:
        for i in range(3):
            await handle.append({"n": i})
        head = await handle.head()
    async with astream(url, offset="-1", live=False) as res:
        items = await res.read_json()
        saved = res.offset
    assert items == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert saved == head.offset
    async with AsyncDurableStream(url, content_type="application/json") as handle:
        await handle.append({"n": 3})
        await asyncio.gather(handle.append({"n": 4}), handle.append({"n": 5}))
    async with astream(url, offset=saved, live=False) as res:
        assert await res.read_json() == [{"n": 3}, {"n": 4}, {"n": 5}]
        end = res.offset
    assert end > saved
    async with astream(url, offset=end, live=False) as res:
        assert await res.read_json() == []
    # Events carry offsets that resume exactly after themselves.
    async with astream(url, offset="-1", live=False) as res:
        events = [e async for e in res.iter_events(mode="json")]
    assert events and events[-1].next_offset == end and events[-1].up_to_date


async def test_python_client_long_poll_tail(server: ServerProc) -> None:
    url = _url(server, "py-lp")
    async with await AsyncDurableStream.create(url, content_type="application/json") as h:
        await h.append({"before": True})
        tail = (await h.head()).offset
    items = [{"lp": 1}, {"lp": 2}, {"lp": 3}]
    assert await _tail(url, tail, "long-poll", items) == items


async def test_python_client_sse_tail(server: ServerProc) -> None:
    url = _url(server, "py-sse")
    async with await AsyncDurableStream.create(url, content_type="application/json") as h:
        await h.append({"before": True})
        tail = (await h.head()).offset
    items = [{"sse": 1}, {"sse": 2}, {"sse": 3}]
    assert await _tail(url, tail, "sse", items) == items


async def test_python_client_sse_catchup_then_live_from_start(server: ServerProc) -> None:
    url = _url(server, "py-sse-start")
    async with await AsyncDurableStream.create(url, content_type="application/json") as h:
        await h.append({"old": 1})
        await h.append({"old": 2})
    got = await _tail(url, "-1", "sse", [{"new": 1}])
    # _tail stops after len(items) == 1 item; the catch-up comes first.
    assert got == [{"old": 1}]
    got = await _tail(url, "-1", "sse", [{"new": 2}, {"new": 3}, {"new": 4}])
    assert got == [{"old": 1}, {"old": 2}, {"new": 1}]


async def test_python_client_bytes(server: ServerProc) -> None:
    url = _url(server, "py-bytes")
    payload = bytes(range(256))
    async with await AsyncDurableStream.create(
        url, content_type="application/octet-stream"
    ) as handle:
        await handle.append(payload)
        await handle.append(b"tail")
    async with astream(url, offset="-1", live=False) as res:
        assert await res.read_bytes() == payload + b"tail"
