"""A ``DurableService`` host in its own process, driven by the e2e tests.

``python peer_proc.py URL USER FQN KEYFILE POOL``: host candidates pinned to 127.0.0.1, short
heartbeat; every received message is echoed back. Prints one JSON object per line on stdout:
``{"ev": "published", "uuid": ...}``, ``{"ev": "connection", "id": ...}``,
``{"ev": "disconnection", "id": ...}``, ``{"ev": "msg", "data": ...}`` (each received message,
in order), ``{"ev": "killed"}``. Reads commands on stdin: ``kill`` (drop every peer connection
silently: a network loss), ``quit``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from durasync.p2p.channel import DurableChannel
from durasync.p2p.host import DurableService
from durasync.p2p.identity import Identity
from durasync.p2p.options import ConnectionOptions, ServiceOptions
from durasync.p2p.rtc import limit_host_addresses

HEARTBEAT = ConnectionOptions(heartbeat_interval=0.25, heartbeat_timeout=1.5, connection_timeout=10)


def emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def main(url: str, user: str, fqn: str, key: Path, pool: int) -> None:
    limit_host_addresses(["127.0.0.1"])
    service = DurableService(
        url,
        username=user,
        identity=Identity.load_or_create(key),
        service_fqn=fqn,
        options=ServiceOptions(pool_size=pool, connection=HEARTBEAT),
    )

    async def echo(channel: DurableChannel, connection_id: str) -> None:
        async for message in channel:
            emit(ev="msg", data=message, label=channel.label)
            await channel.write(message)

    service.on_channel(echo)
    service.on("published", lambda uuid, exp: emit(ev="published", uuid=uuid))
    service.on("connection", lambda cid: emit(ev="connection", id=cid))
    service.on("disconnection", lambda cid: emit(ev="disconnection", id=cid))
    service.on("error", lambda exc, ctx: emit(ev="error", context=ctx, error=str(exc)))
    await service.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "kill":
            service.simulate_network_loss()
            emit(ev="killed")
        elif line == "quit":
            break
    await service.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), int(sys.argv[5])))
