"""End to end on a real socket: ``durasync serve`` in a subprocess."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from helpers import ServerProcess, start_server

S = "/v1/stream"
TEXT = {"content-type": "text/plain"}


@pytest.fixture(params=["memory", "embedded"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> ServerProcess:
    fixture = "memory_server" if request.param == "memory" else "embedded_server"
    proc: ServerProcess = request.getfixturevalue(fixture)
    return proc


def test_round_trip_long_poll_and_sse(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        r = client.put(f"{S}/e2e/a", headers=TEXT, content=b"one ")
        assert r.status_code == 201
        assert r.headers["location"] == f"{server.url}{S}/e2e/a"
        tail = r.headers["stream-next-offset"]

        result: dict[str, httpx.Response] = {}

        def poll() -> None:
            with httpx.Client(base_url=server.url, timeout=10) as other:
                result["r"] = other.get(f"{S}/e2e/a", params={"offset": tail, "live": "long-poll"})

        thread = threading.Thread(target=poll)
        thread.start()
        # Keep appending until the poller has its answer (no sleep-based sync).
        deadline = time.monotonic() + 10
        while thread.is_alive() and time.monotonic() < deadline:
            client.post(f"{S}/e2e/a", headers=TEXT, content=b"two ")
            thread.join(0.05)
        assert "r" in result and result["r"].status_code == 200
        assert result["r"].content.startswith(b"two ")

        client.post(f"{S}/e2e/a", headers={**TEXT, "stream-closed": "true"}, content=b"end")
        with client.stream("GET", f"{S}/e2e/a", params={"offset": "-1", "live": "sse"}) as sse:
            assert sse.headers["content-type"] == "text/event-stream"
            text = sse.read().decode()  # ends by itself: the stream is closed
        assert "event: data" in text
        last = text.strip().split("\n\n")[-1]
        assert json.loads(last.split("data:", 1)[1])["streamClosed"] is True


def test_raw_paths_and_limits(memory_server: ServerProcess) -> None:
    parts = urlsplit(memory_server.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        for raw in [f"{S}/a/../b", f"{S}/%2e%2e/etc", f"{S}/a//b"]:
            conn.request("GET", raw)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 400, (raw, body)
            assert json.loads(body)["error"]["code"] == "INVALID_PATH"
            assert resp.getheader("x-content-type-options") == "nosniff"
    finally:
        conn.close()
    with httpx.Client(base_url=memory_server.url, timeout=10) as client:
        client.put(f"{S}/big", headers=TEXT)

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(40):
                yield b"z" * (1 << 20)

        r = client.post(f"{S}/big", headers=TEXT, content=chunks())
        assert r.status_code == 413
        assert (
            client.head(f"{S}/big").headers["stream-next-offset"]
            == (client.put(f"{S}/big", headers=TEXT).headers["stream-next-offset"])
        )


def test_sigterm_ends_live_requests_and_exits_cleanly(tmp_path: Path) -> None:
    server = start_server("--port", "0", "--data", str(tmp_path / "d"), "--long-poll-timeout", "60")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.put(f"{S}/live", headers=TEXT, content=b"x")
            tail = r.headers["stream-next-offset"]
        outcome: dict[str, object] = {}
        ready = threading.Event()

        def long_poll() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                outcome["poll"] = c.get(f"{S}/live", params={"offset": tail, "live": "long-poll"})

        def sse() -> None:
            with (
                httpx.Client(base_url=server.url, timeout=30) as c,
                c.stream("GET", f"{S}/live", params={"offset": "-1", "live": "sse"}) as s,
            ):
                ready.set()
                outcome["sse"] = b"".join(s.iter_raw())

        threads = [threading.Thread(target=long_poll), threading.Thread(target=sse)]
        for t in threads:
            t.start()
        assert ready.wait(10)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            deadline = time.monotonic() + 10
            while client.get("/healthz").json()["live"] < 2:
                assert time.monotonic() < deadline, "live requests never started"
        started = time.monotonic()
        code = server.stop()
        for t in threads:
            t.join(15)
        assert code == 0, "".join(server.output[-20:])
        assert time.monotonic() - started < 8  # not the 60 s long-poll / SSE timeouts
        poll = outcome["poll"]
        assert isinstance(poll, httpx.Response) and poll.status_code == 204
        assert b"event: control" in outcome["sse"]  # type: ignore[operator]
    finally:
        server.stop()
    # The store was closed cleanly: a restart sees the data.
    again = start_server("--port", "0", "--data", str(tmp_path / "d"))
    try:
        with httpx.Client(base_url=again.url, timeout=10) as client:
            assert client.get(f"{S}/live").content == b"x"
    finally:
        assert again.stop() == 0
