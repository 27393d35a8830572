"""An HTTP reverse proxy that splits traffic by method between two upstreams (test utility).

Writes (``PUT``/``POST``/``DELETE``/``PATCH``) go to ``write_url`` and reads
(``GET``/``HEAD``/``OPTIONS``) to ``read_url``, so a client talking to the
proxy writes through node A and reads (catch-up, long-poll, SSE) through
node B of a cluster: the cross-node variant of the conformance suite.

Guarantees:

- Headers pass through unchanged in both directions (``Host`` included, so
  URLs a node builds from it point back at the proxy), except the hop-by-hop
  headers of RFC 9110 §7.6.1, which belong to each connection.
- Response bodies stream: every upstream chunk is forwarded as it arrives
  (SSE and long-poll answers are not buffered); ``Content-Encoding`` is passed
  through and bodies are not decoded.
- Bounded: request bodies above ``max_body`` get 413; at most
  ``max_connections`` upstream connections per upstream; a client that goes
  away ends its upstream request at once.
- An unreachable upstream gives 502 (never a hang: connect timeout 5 s).

Runs uvicorn in a background thread with its own event loop on a free
loopback port, so a blocking test (``subprocess.run`` of vitest) can use it::

    with RouteProxy(node_a.url, node_b.url) as proxy:
        run_suite(proxy.url)

``python tests/routeproxy.py WRITE_URL READ_URL [--port N]`` runs it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from types import TracebackType
from typing import Any

import httpx
import uvicorn

__all__ = ["READ_METHODS", "RouteProxy"]

#: Methods routed to the read upstream; everything else goes to the write upstream.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# RFC 9110 §7.6.1: connection-specific headers are not forwarded. Content-Length
# is recomputed by the client library for the body we send.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

Scope = dict[str, Any]


class _BodyTooLarge(Exception):
    pass


class RouteProxyApp:
    """The ASGI app: route by method, forward, stream the answer back."""

    def __init__(
        self, write_url: str, read_url: str, *, max_body: int, max_connections: int
    ) -> None:
        self.write_url = write_url.rstrip("/")
        self.read_url = read_url.rstrip("/")
        self.max_body = max_body
        self.max_connections = max_connections
        self.requests = {"read": 0, "write": 0}
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, kind: str) -> httpx.AsyncClient:
        client = self._clients.get(kind)
        if client is None:
            client = httpx.AsyncClient(
                # Long-polls and SSE answers take as long as they take; the
                # client's own disconnect (watched below) ends them.
                timeout=httpx.Timeout(connect=5.0, read=None, write=30.0, pool=30.0),
                limits=httpx.Limits(
                    max_connections=self.max_connections, max_keepalive_connections=64
                ),
                follow_redirects=False,
            )
            self._clients[kind] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        if scope["type"] != "http":
            return  # WebSockets are not proxied (streams only)
        method: str = scope["method"]
        kind = "read" if method in READ_METHODS else "write"
        self.requests[kind] += 1
        base = self.read_url if kind == "read" else self.write_url
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        target = (
            base + raw_path.decode("latin-1") + (("?" + query.decode("latin-1")) if query else "")
        )
        try:
            body = await self._read_body(receive)
        except _BodyTooLarge:
            await _plain(send, 413, b"request body too large for the route proxy\n")
            return
        except _Disconnected:
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        client = self._client(kind)
        request = client.build_request(method, target, content=body)
        # Replace httpx's defaults (Accept, User-Agent, ...) by the client's own
        # headers: pass-through means exactly what the client sent.
        out = httpx.Headers(headers)
        if body or method in ("POST", "PUT", "PATCH"):
            out["content-length"] = str(len(body))
        request.headers = out
        # A client that goes away (an SSE reader closing) must end the upstream
        # request too, or it would run until the node's own time limit.
        disconnected = asyncio.create_task(_wait_disconnect(receive))
        forward = asyncio.create_task(self._forward(client, request, send))
        try:
            await asyncio.wait({forward, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (forward, disconnected):
                task.cancel()
            await asyncio.gather(forward, disconnected, return_exceptions=True)

    async def _read_body(self, receive: Any) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _forward(self, client: httpx.AsyncClient, request: httpx.Request, send: Any) -> None:
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await _plain(send, 502, f"route proxy: upstream failed: {exc!r}\n".encode())
            return
        try:
            headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            try:
                async for chunk in response.aiter_raw():
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError:
                pass  # upstream cut mid-body: end ours (the client sees a short body)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


class _Disconnected(Exception):
    pass


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _plain(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RouteProxy:
    """Run :class:`RouteProxyApp` under uvicorn in a thread on ``127.0.0.1``."""

    def __init__(
        self,
        write_url: str,
        read_url: str,
        *,
        port: int = 0,
        max_body: int = 64 * 1024 * 1024,
        max_connections: int = 256,
    ) -> None:
        self.app = RouteProxyApp(
            write_url, read_url, max_body=max_body, max_connections=max_connections
        )
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            # Pass-through: the upstream's own Date/Server headers, not ours too.
            server_header=False,
            date_header=False,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; returns once the socket accepts requests."""
        self._thread = threading.Thread(target=self._run, name="route-proxy", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"route proxy failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("route proxy did not start in time")
            time.sleep(0.01)

    def _run(self) -> None:
        async def main() -> None:
            try:
                await self._server.serve(sockets=[self._sock])
            finally:
                await self.app.aclose()

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start()/stop()
            self._error = exc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread (bounded)."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> RouteProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("write_url", help="upstream for PUT/POST/DELETE (node A)")
    parser.add_argument("read_url", help="upstream for GET/HEAD/OPTIONS (node B)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    proxy = RouteProxy(args.write_url, args.read_url, port=args.port)
    proxy.start()
    print(f"route proxy on {proxy.url}: writes -> {args.write_url}, reads -> {args.read_url}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()


if __name__ == "__main__":
    main()
