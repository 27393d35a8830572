"""``durasync p2p host`` and ``durasync p2p connect``: durable peer-to-peer from a terminal.

Registered in :mod:`durasync.cli` by :func:`add_p2p_command`. aiortc is imported only when a
command runs, so ``durasync serve`` works without the ``p2p`` extra.

``host`` claims the username (creating the key file with mode 0600 when it does not exist),
publishes the service and prints every message it receives as one line on stdout (``--echo``
also sends it back). Status lines go to stderr; the first is
``published <uuid> <fqn> expires <unix time>``. It runs until SIGINT/SIGTERM, then closes
gracefully (unpublishes). SIGUSR1 silently drops its current peer connections: a drill for the
clients' reconnection.

``connect`` sends each stdin line as one message, prints each message it receives as a line,
and exits 0 once stdin is exhausted and every line it sent was acknowledged by the host's
application (exactly once, in order, across reconnects).

Exit codes: 0 success, 1 failure (refused, or the connection failed for good), 2 usage,
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["add_p2p_command"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"not an http(s) server URL: {text!r}")
    return text


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url", type=_url, metavar="URL", help="the durasync server, e.g. http://127.0.0.1:4437"
    )
    parser.add_argument(
        "--user", required=True, metavar="NAME", help="the service owner's username"
    )
    parser.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="STUN/TURN server (stun:host:port); repeatable; none: host candidates only",
    )
    parser.add_argument(
        "--ice-address",
        action="append",
        default=None,
        metavar="ADDR",
        help="gather host candidates only on this local address (e.g. 127.0.0.1); repeatable",
    )
    parser.add_argument("--token", default=None, help="bearer token (server with --auth-secret)")
    parser.add_argument(
        "--heartbeat-timeout",
        type=_positive,
        default=5.0,
        metavar="SECONDS",
        help="declare the peer dead after this much silence",
    )


def add_p2p_command(subparsers: Any) -> None:
    """Register ``durasync p2p host|connect``."""
    p2p = subparsers.add_parser(
        "p2p",
        help="durable peer-to-peer channels (WebRTC) found through the server's rendezvous",
        description=(
            "Publish a service (host) or connect to one (connect) through the rendezvous of a "
            "durasync server; messages then flow directly between the peers over WebRTC, "
            "exactly once and in order, across reconnects. Needs the p2p extra: "
            "pip install 'durasync[p2p]'."
        ),
    )
    sub = p2p.add_subparsers(dest="p2p_command", metavar="COMMAND", required=True)
    host = sub.add_parser(
        "host",
        help="publish a service and print what clients send",
        description=(
            "Claim --user with the key in --key (created, mode 0600, when missing), publish "
            "--service and print each received message as a line. SIGUSR1 drops the current "
            "peer connections (a reconnection drill)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common(host)
    host.add_argument("--service", required=True, metavar="FQN", help="reverse.domain.name@X.Y.Z")
    host.add_argument(
        "--key",
        type=Path,
        default=None,
        metavar="FILE",
        help="Ed25519 key file (default: NAME.key)",
    )
    host.add_argument("--echo", action="store_true", help="send every message back")
    host.add_argument("--public", action="store_true", help="list it in the user's services")
    host.add_argument(
        "--ttl", type=_positive, default=None, metavar="SECONDS", help="service TTL (60 s-24 h)"
    )
    host.add_argument("--pool", type=int, default=2, metavar="N", help="offers kept open (1-10)")
    host.set_defaults(func=run_host)
    connect = sub.add_parser(
        "connect",
        help="send stdin lines to a service, print what comes back",
        description=(
            "Connect to --service of --user (or --uuid), send each stdin line, print each "
            "received message; exit 0 once stdin is exhausted and all was acknowledged."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _common(connect)
    target = connect.add_mutually_exclusive_group(required=True)
    target.add_argument("--service", metavar="FQN", help="reverse.domain.name@X.Y.Z")
    target.add_argument("--uuid", help="the service's UUID")
    connect.add_argument(
        "--channel", default="default", metavar="LABEL", help="the durable channel's label"
    )
    connect.add_argument(
        "--timeout", type=_positive, default=30.0, metavar="SECONDS", help="per connection attempt"
    )
    connect.set_defaults(func=run_connect)


def _load_p2p() -> Any:
    try:
        from durasync.p2p import rtc
    except ImportError as exc:
        print(f"durasync p2p needs aiortc: pip install 'durasync[p2p]' ({exc})", file=sys.stderr)
        return None
    return rtc


def _options(args: argparse.Namespace) -> Any:
    from durasync.p2p.options import ConnectionOptions

    interval = min(1.0, args.heartbeat_timeout / 4)
    return ConnectionOptions(
        connection_timeout=getattr(args, "timeout", 30.0),
        heartbeat_interval=interval,
        heartbeat_timeout=args.heartbeat_timeout,
        ice_servers=tuple(args.ice_server),
        token=args.token,
    )


def _line(data: str | bytes) -> str:
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    return text.replace("\n", "\\n")


def _run(
    args: argparse.Namespace, main: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
) -> int:
    """Run one side's ``main`` with the p2p extra loaded and the ICE addresses limited."""
    rtc = _load_p2p()
    if rtc is None:
        return EXIT_FAILURE
    if args.ice_address:
        rtc.limit_host_addresses(args.ice_address)
    try:
        return asyncio.run(main(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def run_host(args: argparse.Namespace) -> int:
    return _run(args, _host)


async def _host(args: argparse.Namespace) -> int:
    from durasync.p2p.channel import DurableChannel
    from durasync.p2p.errors import InsecureKeyFile, RendezvousError
    from durasync.p2p.host import DurableService
    from durasync.p2p.identity import Identity
    from durasync.p2p.options import ServiceOptions

    key = args.key if args.key is not None else Path(f"{args.user}.key")
    try:
        identity = Identity.load_or_create(key)
    except (InsecureKeyFile, ValueError, OSError) as exc:
        print(f"durasync p2p host: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        options = ServiceOptions(
            is_public=args.public, ttl=args.ttl, pool_size=args.pool, connection=_options(args)
        )
    except ValueError as exc:
        print(f"durasync p2p host: {exc}", file=sys.stderr)
        return 2
    service = DurableService(
        args.url, username=args.user, identity=identity, service_fqn=args.service, options=options
    )
    out = sys.stdout

    async def serve(channel: DurableChannel, connection_id: str) -> None:
        async for message in channel:
            out.write(_line(message) + "\n")
            out.flush()
            if args.echo:
                await channel.write(message)

    service.on_channel(serve)
    service.on(
        "published",
        lambda uuid, exp: print(
            f"published {uuid} {args.service} expires {exp:.0f}", file=sys.stderr, flush=True
        ),
    )
    service.on("connection", lambda cid: print(f"connection {cid}", file=sys.stderr, flush=True))
    service.on(
        "disconnection", lambda cid: print(f"disconnection {cid}", file=sys.stderr, flush=True)
    )
    service.on(
        "error", lambda exc, ctx: print(f"error ({ctx}): {exc}", file=sys.stderr, flush=True)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, service.simulate_network_loss)
    try:
        await service.start()
    except RendezvousError as exc:
        print(f"durasync p2p host: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    await stop.wait()
    await service.close()
    return EXIT_OK


def run_connect(args: argparse.Namespace) -> int:
    return _run(args, _connect)


async def _connect(args: argparse.Namespace) -> int:
    from durasync.p2p.connection import DurableConnection
    from durasync.p2p.errors import ChannelClosedError, PeerConnectionFailed

    conn = DurableConnection(
        args.url,
        username=args.user if args.uuid is None else None,
        service_fqn=args.service,
        uuid=args.uuid,
        options=_options(args),
    )
    conn.on(
        "reconnecting",
        lambda n, m, d: print(f"reconnecting {n}/{m} in {d:.1f}s", file=sys.stderr, flush=True),
    )
    conn.on("connected", lambda: print("connected", file=sys.stderr, flush=True))
    channel = conn.create_channel(args.channel)
    failed = asyncio.Event()
    conn.on("failed", lambda exc, permanent: failed.set() if permanent else None)

    async def printer() -> None:
        async for message in channel:
            sys.stdout.write(_line(message) + "\n")
            sys.stdout.flush()

    lines: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1000)
    loop = asyncio.get_running_loop()

    def read_stdin() -> None:
        # A daemon thread: a blocked read never holds up the exit.
        for line in sys.stdin:
            asyncio.run_coroutine_threadsafe(lines.put(line.rstrip("\n")), loop).result()
        asyncio.run_coroutine_threadsafe(lines.put(None), loop).result()

    async def sender() -> None:
        threading.Thread(target=read_stdin, daemon=True, name="stdin").start()
        while (line := await lines.get()) is not None:
            await channel.write(line)
        await channel.drained()

    try:
        await conn.connect()
    except PeerConnectionFailed as exc:
        print(f"durasync p2p connect: {exc}", file=sys.stderr)
        await conn.close(0)
        return EXIT_FAILURE
    printing = asyncio.create_task(printer())
    sending = asyncio.create_task(sender())
    fail = asyncio.create_task(failed.wait())
    try:
        done, _ = await asyncio.wait({sending, fail}, return_when=asyncio.FIRST_COMPLETED)
        if sending in done:
            sending.result()
            code = EXIT_OK
        else:
            print("durasync p2p connect: the connection failed for good", file=sys.stderr)
            code = EXIT_FAILURE
    except ChannelClosedError as exc:
        print(f"durasync p2p connect: {exc}", file=sys.stderr)
        code = EXIT_FAILURE
    finally:
        sending.cancel()
        fail.cancel()
        await conn.close(1.0)
        printing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await printing
    return code
