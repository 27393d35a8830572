"""The HTTP connection layer of ``durasync serve`` (durasync/httpserver.py), over real sockets.

Each test starts ``durasync serve`` with short limits and talks raw HTTP/1.1 to it, so that it
controls exactly what arrives and when: oversized and endless heads, heads and bodies that
stall, connections that send nothing, more connections than the cap, clients that do not
read, WebSocket upgrades. Waits are bounded waits on conditions (a socket's answer or EOF).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from helpers import ServerProcess, start_server, wait_until

LIMITS = [
    "--max-header-bytes",
    "4096",
    "--max-headers",
    "20",
    "--header-timeout",
    "0.5",
    "--body-timeout",
    "0.5",
    "--idle-timeout",
    "0.5",
    "--write-timeout",
    "1",
]


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    proc = start_server("--port", "0", "--memory", "--long-poll-timeout", "30", *LIMITS)
    try:
        yield proc
    finally:
        assert proc.stop() == 0, "".join(proc.output[-30:])


def _address(server: ServerProcess) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _connect(server: ServerProcess, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(_address(server))
    return sock


def _answer(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes (bounded by ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _fds(server: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{server.proc.pid}/fd"))


def _live(server: ServerProcess) -> int:
    return int(httpx.get(f"{server.url}/healthz").json()["live"])


def test_oversized_heads_are_431(server: ServerProcess) -> None:
    for head in (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(30))
        + b"\r\n",
        b"GET /healthz?" + b"q" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        with _connect(server) as sock:
            sock.sendall(head)
            answer = _answer(sock)
        assert _status(answer) == 431, answer[:200]
        assert b"HEADERS_TOO_LARGE" in answer and b"connection: close" in answer.lower()


def test_an_endless_head_is_cut_off_at_the_limit(server: ServerProcess) -> None:
    """The server stops reading an unfinished head at the limit (it never buffers 1 MiB)."""
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < (1 << 20):
                sock.sendall(b"a" * 1024)
                sent += 1024
        answer = _answer(sock)
    assert sent < (1 << 20) or _status(answer) == 431
    if answer:
        assert _status(answer) == 431


def test_a_head_that_stalls_is_408(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        answer = _answer(sock)
    assert _status(answer) == 408 and b"HEADER_TIMEOUT" in answer
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    "request_head",
    [
        b"POST /v1/stream/b HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 100\r\n\r\n0123456789",
        b"POST /v1/stream/b HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
)
def test_a_body_that_stalls_is_408(server: ServerProcess, request_head: bytes) -> None:
    httpx.put(f"{server.url}/v1/stream/b", headers={"content-type": "text/plain"})
    with _connect(server) as sock:
        sock.sendall(request_head)
        answer = _answer(sock)
    assert _status(answer) == 408 and b"BODY_TIMEOUT" in answer
    # Nothing of the unfinished body was appended.
    assert httpx.get(f"{server.url}/v1/stream/b", params={"offset": "-1"}).content == b""


def test_a_slow_but_steady_body_is_accepted(server: ServerProcess) -> None:
    httpx.put(f"{server.url}/v1/stream/s", headers={"content-type": "text/plain"})
    with _connect(server) as sock:
        sock.sendall(
            b"POST /v1/stream/s HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 6\r\n\r\n"
        )
        for byte in b"steady":
            time.sleep(0.2)  # slower than nothing, faster than the body timeout
            sock.sendall(bytes([byte]))
        answer = sock.recv(4096)
    assert _status(answer) == 204
    assert httpx.get(f"{server.url}/v1/stream/s", params={"offset": "-1"}).content == b"steady"


def test_silent_connections_are_closed_while_a_client_is_served(server: ServerProcess) -> None:
    """300 connections that send nothing are closed within the idle timeout (0.5 s) while a
    normal client is served (the attack: they used to stay open until the fd limit)."""
    base_fds = _fds(server)
    silent = [_connect(server) for _ in range(300)]
    try:
        opened = time.monotonic()
        with httpx.Client(base_url=server.url) as client:
            assert (
                client.put("/v1/stream/n", headers={"content-type": "text/plain"}).status_code
                == 201
            )
            assert (
                client.post(
                    "/v1/stream/n", headers={"content-type": "text/plain"}, content=b"ok"
                ).status_code
                == 204
            )
            assert client.get("/v1/stream/n", params={"offset": "-1"}).content == b"ok"
        for sock in silent:
            sock.settimeout(max(0.1, opened + 10 - time.monotonic()))
            assert sock.recv(1) == b""  # closed by the server
        # Every one was closed within a few idle timeouts of opening (bounded waits above).
        assert time.monotonic() - opened < 10
        wait_until(lambda: _fds(server) <= base_fds + 2, 5)
    finally:
        for sock in silent:
            sock.close()


def test_connections_beyond_the_cap_get_503() -> None:
    server = start_server(
        "--port", "0", "--memory", "--max-connections", "5", "--idle-timeout", "30"
    )
    try:
        held = [_connect(server) for _ in range(5)]
        wait_until(lambda: _fds(server) >= 5, 5)
        with _connect(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _answer(sock)
        assert _status(answer) == 503 and b"retry-after: 1" in answer.lower()
        assert b"TOO_MANY_CONNECTIONS" in answer
        for sock in held:
            sock.close()
        wait_until(lambda: httpx.get(f"{server.url}/healthz").status_code == 200, 5)
    finally:
        assert server.stop() == 0


def test_a_client_that_does_not_read_is_cut_off(server: ServerProcess) -> None:
    """An SSE and a catch-up reader that never read are aborted within the write timeout."""
    httpx.put(f"{server.url}/v1/stream/big", headers={"content-type": "application/octet-stream"})
    for _ in range(4):
        httpx.post(
            f"{server.url}/v1/stream/big",
            headers={"content-type": "application/octet-stream"},
            content=os.urandom(1 << 20),
        )
    base_fds = _fds(server)
    readers = []
    for query in (b"offset=-1&live=sse", b"offset=-1"):
        sock = _connect(server, rcvbuf=4096)
        sock.sendall(b"GET /v1/stream/big?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        readers.append(sock)
    try:
        wait_until(lambda: _live(server) == 1, 5)
        wait_until(lambda: _live(server) == 0 and _fds(server) <= base_fds, 10)
    finally:
        for sock in readers:
            sock.close()


def test_a_gone_long_poll_client_leaves_the_live_count(server: ServerProcess) -> None:
    httpx.put(f"{server.url}/v1/stream/lp", headers={"content-type": "text/plain"})
    sockets = []
    for _ in range(5):
        sock = _connect(server)
        sock.sendall(b"GET /v1/stream/lp?offset=now&live=long-poll HTTP/1.1\r\nHost: x\r\n\r\n")
        sockets.append(sock)
    wait_until(lambda: _live(server) == 5, 5)
    for sock in sockets:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # reset, as a crashed client would
    # Well before the 30 s long-poll timeout.
    wait_until(lambda: _live(server) == 0, 5)


def test_invalid_utf8_in_the_path_is_400_over_the_wire(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"PUT /v1/stream/a%FF HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        answer = _answer(sock)  # until the idle timeout closes the connection
    assert _status(answer) == 400 and b"INVALID_PATH" in answer


def test_websocket_upgrades_work_and_their_heads_are_bounded(server: ServerProcess) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = server.url.replace("http://", "ws://", 1) + "/v1/rooms/r?client=a&format=json"
    with connect(url, open_timeout=10) as ws:
        assert '"mtype":"state"' in str(ws.recv(timeout=10))
    with (
        pytest.raises(InvalidStatus) as exc,
        connect(url, open_timeout=10, additional_headers={"X-Big": "a" * 8000}),
    ):
        pass
    assert exc.value.response.status_code == 431
