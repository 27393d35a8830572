"""Resource bounds with clients that never read (the attack: ~4 MiB held per catch-up GET and
~10 MiB per SSE reader, until the client went away).

50 SSE readers and 50 catch-up readers open on a 20 MiB stream and never read (a 4 KiB
receive buffer, no ``recv``). The server's RSS growth must stay under
:data:`RSS_GROWTH_BOUND` (docs/deploy.md) and every one of them must be disconnected
within the write timeout (a stalled answer) or the idle timeout (an answer that fit in the
socket buffers), both 1 s here, plus scheduling slack; then the server serves as before.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import ServerProcess, start_server

pytestmark = pytest.mark.slow

#: Documented bound (docs/deploy.md, "Limits and timeouts") on the RSS growth of the server
#: for 100 clients that never read: the read budget (16 MiB of catch-up chunks held at once,
#: which one more chunk may overshoot) plus per connection about one written piece, one SSE
#: event and the transport's buffer (64 KiB each).
RSS_GROWTH_BOUND = 64 * 1024 * 1024
WRITE_TIMEOUT = 1.0
STREAM_BYTES = 20 * 1024 * 1024
MESSAGE = b'{"n":"%06d","pad":"' + b"x" * 177 + b'"}'  # 200 bytes, like bench/streams.py


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _connected(sock: socket.socket) -> bool:
    """Whether the server still holds the connection (Linux TCP_INFO state ESTABLISHED; a
    server close makes it CLOSE_WAIT, an abort CLOSE), without reading from it."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    # The embedded store (the default): its reads copy the data, unlike the memory store's.
    proc = start_server(
        "--port",
        "0",
        "--data",
        str(tmp_path / "data"),
        "--write-timeout",
        str(WRITE_TIMEOUT),
        "--idle-timeout",
        str(WRITE_TIMEOUT),
        "--sse-max-duration",
        "60",
    )
    try:
        yield proc
    finally:
        assert proc.stop() == 0, "".join(proc.output[-30:])


def _fill(url: str) -> None:
    json_ct = {"content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.put("/v1/stream/big", headers=json_ct).status_code == 201
        count = STREAM_BYTES // len(MESSAGE % 0)
        batch = 10_000
        for start in range(0, count, batch):
            body = (
                b"["
                + b",".join(MESSAGE % n for n in range(start, min(count, start + batch)))
                + b"]"
            )
            assert client.post("/v1/stream/big", headers=json_ct, content=body).status_code == 204


def _non_reader(server: ServerProcess, query: bytes) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(b"GET /v1/stream/big?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def test_clients_that_never_read_are_bounded_and_cut_off(server: ServerProcess) -> None:
    pid = server.proc.pid
    _fill(server.url)
    with httpx.Client(base_url=server.url) as client:
        # Warm up the paths the readers take (first-use allocations are not their cost).
        client.get("/v1/stream/big", params={"offset": "-1"})
        with client.stream("GET", "/v1/stream/big", params={"offset": "-1", "live": "sse"}) as r:
            next(r.iter_bytes())
    base_rss = _rss(pid)
    readers = [_non_reader(server, b"offset=-1&live=sse") for _ in range(50)]
    readers += [_non_reader(server, b"offset=-1") for _ in range(50)]
    opened = time.monotonic()
    peak = base_rss
    try:
        # Sample the server's RSS until the server has dropped every reader (bounded).
        while connected := sum(map(_connected, readers)):
            peak = max(peak, _rss(pid))
            assert time.monotonic() - opened < 30 * WRITE_TIMEOUT, (
                f"{connected} non-readers still connected"
            )
            time.sleep(0.02)
        gone_after = time.monotonic() - opened
    finally:
        for sock in readers:
            sock.close()
    growth = peak - base_rss
    print(
        f"RSS {base_rss >> 20} MiB -> peak {peak >> 20} MiB (+{growth >> 20} MiB); "
        f"all 100 disconnected after {gone_after:.1f} s"
    )
    assert growth < RSS_GROWTH_BOUND, f"RSS grew by {growth >> 20} MiB"
    # A stalled write is aborted the write timeout after it stalled, an answer that fit in
    # the socket buffers leaves an idle connection, reset after the idle timeout plus the
    # write timeout (1 s each here). Before stalling, each reader fills the kernel's socket
    # buffers (about 3 MB each on loopback with Linux's send buffer autotuning): writing
    # those 300 MB takes the server about 5 s of CPU, more wall time on a busy machine.
    assert gone_after < 25 * WRITE_TIMEOUT
    with httpx.Client(base_url=server.url) as client:
        health = client.get("/healthz").json()
        assert health["live"] == 0
        r = client.get("/v1/stream/big", params={"offset": "-1"})
        assert r.status_code == 200 and r.headers["stream-next-offset"]


def test_a_huge_json_batch_costs_a_small_multiple_of_its_body(tmp_path: Path) -> None:
    """16 MiB of ``[1,1,...]`` (8 Mi messages; the attack peaked at 2.6 GB RSS and took 14-17 s)
    is refused with 413 in a small multiple of the body's size; a batch at the cap is fine."""
    import threading

    server = start_server("--port", "0", "--data", str(tmp_path / "data"))
    pid = server.proc.pid
    try:
        json_ct = {"content-type": "application/json"}
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.put("/v1/stream/j", headers=json_ct).status_code == 201
            body = b"[" + b"1," * (8 * 1024 * 1024 - 2) + b"1]"  # 16 MiB - 1 byte
            base = _rss(pid)
            peak = [base]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], _rss(pid))
                    done.wait(0.005)

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                r = client.post("/v1/stream/j", headers=json_ct, content=body)
            finally:
                done.set()
                sampler.join()
            assert r.status_code == 413 and r.json()["error"]["code"] == "TOO_MANY_MESSAGES"
            growth = peak[0] - base
            seconds = r.elapsed.total_seconds()
            print(f"16 MiB batch of 8 Mi messages: RSS +{growth >> 20} MiB, {seconds:.2f} s")
            assert growth < 4 * len(body)
            at_cap = b"[" + b"1," * 99_999 + b"1]"
            assert client.post("/v1/stream/j", headers=json_ct, content=at_cap).status_code == 204
            r = client.get("/v1/stream/j", params={"offset": "-1"})
            assert r.content == at_cap
    finally:
        assert server.stop() == 0
