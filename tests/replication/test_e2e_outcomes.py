"""Push outcomes between real servers: permanent refusals become dead letters for their
stream only and are never retried; a remote answering 503 for a while gets retries, the link
reconciles, and everything arrives once."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from .helpers import eventually, serving
from .httpproxy import CountingProxy
from .procs import Serve
from .test_e2e_streams import full_read, write_links

pytestmark = pytest.mark.slow

SECRET = "replication-test-secret-0123456789abcdef"


@contextlib.asynccontextmanager
async def collect_events(url: str) -> AsyncIterator[list[dict[str, Any]]]:
    """The edge's replication events (SSE), collected in the background."""
    events: list[dict[str, Any]] = []
    ready = asyncio.Event()

    async def reader() -> None:
        async with (
            httpx.AsyncClient(timeout=None) as http,
            http.stream("GET", url + "/v1/replication/events") as resp,
        ):
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                ready.set()  # the first line (a comment) is sent once subscribed
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))

    task = asyncio.create_task(reader())
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def append_json(http: httpx.AsyncClient, url: str, value: object) -> None:
    r = await http.post(
        url, content=json.dumps(value), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 204, r.text


async def test_permanent_refusals_are_dead_letters_for_that_prefix_only(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    cloud = serve("cloud", extra=["--auth-secret", SECRET])
    proxy = CountingProxy(cloud.url)
    token = jwt.encode({"sub": "edge", "write": ["stream/outbox/ok/"]}, SECRET, algorithm="HS256")
    try:
        async with serving(proxy.app) as proxy_url, httpx.AsyncClient(timeout=10) as http:
            conf = write_links(
                tmp_path / "edge.toml",
                {"name": "up", "remote": proxy_url, "token": token, "push": ["outbox/"]},
            )
            edge = serve("edge", replicate=conf)
            async with collect_events(edge.url) as events:
                for p in ("outbox/ok/a", "outbox/no/b"):
                    r = await http.put(edge.base + p, headers={"Content-Type": "application/json"})
                    assert r.status_code == 201
                for i in range(3):
                    await append_json(http, edge.base + "outbox/ok/a", i)
                    await append_json(http, edge.base + "outbox/no/b", i)
                auth = {"Authorization": f"Bearer {token}"}

                async def ok_arrived(n: int) -> bool:
                    r = await http.get(
                        cloud.base + "outbox/ok/a", params={"offset": "-1"}, headers=auth
                    )
                    return r.status_code == 200 and r.json() == list(range(n))

                await eventually(lambda: ok_arrived(3))

                async def one_dead_letter() -> bool:
                    r = await http.get(edge.url + "/v1/replication/links/up/dead-letters")
                    return len(r.json()["deadLetters"]) == 1

                await eventually(one_dead_letter)
                (letter,) = (
                    await http.get(edge.url + "/v1/replication/links/up/dead-letters")
                ).json()["deadLetters"]
                assert letter["key"] == "outbox/no/b" and letter["status"] == 403
                assert "FORBIDDEN" in letter["error"]
                no_path = "/v1/stream/outbox/no/b"
                assert _count(proxy, no_path) == 1  # one request, refused: never retried
                # More traffic on both: the good prefix keeps flowing, the refused one is
                # not tried again.
                for i in range(3, 6):
                    await append_json(http, edge.base + "outbox/no/b", i)
                    await append_json(http, edge.base + "outbox/ok/a", i)
                await eventually(lambda: ok_arrived(6))
                # A stream created now arrives only through a later discovery round: the
                # parked one would have been tried again by then if it were retried.
                r = await http.put(
                    edge.base + "outbox/ok/c", headers={"Content-Type": "application/json"}
                )
                assert r.status_code == 201

                async def new_stream_arrived() -> bool:
                    r = await http.head(cloud.base + "outbox/ok/c", headers=auth)
                    return r.status_code == 200

                await eventually(new_stream_arrived)
                assert _count(proxy, no_path) == 1
                view = (await http.get(edge.url + "/v1/replication/links")).json()["links"][0]
                assert view["deadLetters"] == 1 and view["status"] == "live"
                assert any(e["type"] == "dead-letter:added" for e in events)
                # The operator retries (nothing was fixed): tried once more, refused again.
                r = await http.post(edge.url + "/v1/replication/links/up/retry-dead-letters")
                assert r.status_code == 200 and r.json()["retried"] == 1

                async def refused_again() -> bool:
                    return _count(proxy, no_path) == 2 and await one_dead_letter()

                await eventually(refused_again)
    finally:
        await proxy.aclose()


def _count(proxy: CountingProxy, path: str) -> int:
    return sum(n for (_, p), n in proxy.counts.items() if p == path)


async def test_a_remote_answering_503_for_a_while_gets_retries_then_everything_once(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    cloud = serve("cloud")
    proxy = CountingProxy(cloud.url)
    proxy.retry_after = "0"
    try:
        async with serving(proxy.app) as proxy_url, httpx.AsyncClient(timeout=10) as http:
            conf = write_links(
                tmp_path / "edge.toml", {"name": "up", "remote": proxy_url, "push": ["outbox/"]}
            )
            edge = serve("edge", replicate=conf)
            async with collect_events(edge.url) as events:
                url = edge.base + "outbox/x"
                r = await http.put(url, headers={"Content-Type": "application/json"})
                assert r.status_code == 201
                await append_json(http, url, 0)

                async def arrived(n: int) -> bool:
                    status, body, _ = await full_read(http, cloud.base + "outbox/x", "-1")
                    return status == 200 and json.loads(body) == list(range(n))

                await eventually(lambda: arrived(1))
                proxy.failing = True
                for i in range(1, 10):
                    await append_json(http, url, i)

                async def refused_and_reconciling() -> bool:
                    posts = proxy.answers[("POST", "/v1/stream/outbox/x", 503)]
                    return posts >= 5 and any(e["type"] == "reconcile:needed" for e in events)

                await eventually(refused_and_reconciling)
                view = (await http.get(edge.url + "/v1/replication/links")).json()["links"][0]
                assert view["needsReconcile"] is True and view["deadLetters"] == 0
                assert view["lag"]["messages"] > 0
                proxy.failing = False
                await eventually(lambda: arrived(10))

                async def settled() -> bool:
                    view = (await http.get(edge.url + "/v1/replication/links")).json()["links"][0]
                    return not view["needsReconcile"] and view["lag"]["messages"] == 0

                await eventually(settled)
                assert any(e["type"] == "reconcile:completed" for e in events)
                assert any(e["type"] == "checkpoint:push-advance" for e in events)
    finally:
        await proxy.aclose()
