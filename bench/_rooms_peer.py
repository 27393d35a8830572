"""pycrdt-websocket server for ``bench/rooms.py``, run as a subprocess.

The standard way pycrdt-websocket is served (its README, Jupyter's collaboration server):
a :class:`pycrdt.websocket.WebsocketServer` wrapped in its :class:`ASGIServer` and run by an
ASGI server; we use uvicorn, the same ASGI server and WebSocket implementation that
``durasync serve`` uses, so the transport is identical and the comparison is about the room
servers. The room is the URL path (one ``YRoom`` with one ``Doc`` per path), there is no
YStore (pycrdt-websocket's default: nothing is persisted, unlike durasync's fsync'd journal).

Prints ``listening on http://127.0.0.1:PORT`` once the socket is bound (the line
``bench/_peers.py`` waits for) and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys

import uvicorn
from pycrdt.websocket import ASGIServer, WebsocketServer, exception_logger


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)  # uvicorn's default backlog; listening before we announce the port
    port = sock.getsockname()[1]

    # exception_logger: a client that vanishes mid-send is logged and dropped instead of
    # tearing down its room (the documented setting for servers with many clients).
    websocket_server = WebsocketServer(exception_handler=exception_logger)
    app = ASGIServer(websocket_server)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # As ``durasync serve`` (no --ws-compression); the bench clients do not offer it anyway.
        ws_per_message_deflate=False,
    )  # otherwise uvicorn's defaults, as ``durasync serve`` uses them
    server = uvicorn.Server(config)
    async with websocket_server:
        print(f"listening on http://{args.host}:{port}", flush=True)
        await server.serve(sockets=[sock])


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main())
