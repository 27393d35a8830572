"""The ``durasync`` command line.

``durasync serve`` runs the server on uvicorn (uvloop and httptools when
installed). Once the socket is bound it prints exactly one line to stderr::

    durasync listening on http://127.0.0.1:4437 (store: embedded at /abs/dir)

(with ``--port 0`` the port actually bound). SIGTERM/SIGINT shut down
gracefully: open long-polls and SSE streams end at once, in-flight requests
finish, then the store is closed.

Adding a subcommand: write ``add_<name>_command(subparsers)`` that creates
its parser and sets ``func`` (a callable taking the parsed namespace and
returning an exit code), and call it from :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from durasync import __version__
from durasync.auth import MIN_SECRET_BYTES
from durasync.client.cli import add_append_command, add_tail_command
from durasync.p2p.cli import add_p2p_command
from durasync.replication.cli import add_links_command, add_replication_options

__all__ = ["build_parser", "main"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4437
DEFAULT_DATA = "./durasync-data"

Command = Callable[[argparse.Namespace], int]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535: {text!r}")
    return value


def _origin(text: str) -> str:
    from durasync.streams.app import normalize_origin

    try:
        return normalize_origin(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _redis_url(text: str) -> str:
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise argparse.ArgumentTypeError(
            f"not a Redis URL (redis://HOST:PORT/DB, rediss://..., unix://...): {text!r}"
        )
    return text


#: Environment variables ``serve`` reads, by option: secrets need not be flags (visible in
#: ``ps``). Precedence: flag > environment > config file > default.
SERVE_ENVIRONMENT = {"auth_secret": "DURASYNC_AUTH_SECRET", "redis": "DURASYNC_REDIS_URL"}
#: The mutually exclusive store options: one choice, taken whole from one source.
_STORE_DESTS = ("data", "memory", "redis")

_SERVE_EPILOG = (
    "Secrets and settings need not be flags (flags are visible in ps): DURASYNC_AUTH_SECRET and "
    "DURASYNC_REDIS_URL in the environment stand for --auth-secret and --redis, and --config "
    "FILE reads a TOML file whose keys are the option names without '--' (auth-secret = "
    '"...", memory = true, cors-origin = ["https://app.example"], room-rate = 500). '
    "Precedence: flag > environment > config file > default; a bad file stops serve with one "
    "line naming the problem. "
    "Exit status: 0 stopped by SIGTERM or Ctrl-C after a clean shutdown; 1 failed while running; "
    "2 bad arguments, environment or config file; 3 could not start (the store cannot be opened, "
    "or the address cannot be bound, e.g. the port is in use)."
)


def add_serve_command(subparsers: Any) -> None:
    """Register ``durasync serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="run the durasync server",
        description=(
            "Serve Durable Streams under /v1/stream/<path> (HTTP: catch-up, long-poll, SSE) and "
            "collaborative rooms under /v1/rooms/<room> (WebSocket; GET /v1/rooms lists them, "
            "GET /v1/rooms/<room> shows one's graph, DELETE /v1/rooms/<room> removes it), plus "
            "GET /healthz. Without --auth-secret only loopback clients are admitted. Rooms "
            "options are in the 'rooms' group below (docs/protocol.md)."
        ),
        epilog=_SERVE_EPILOG,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_serve_arguments(parser)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of ``durasync serve`` (also used to resolve a config file's keys)."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="read options from a TOML file (keys: option names without '--')",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="TCP port (0: pick a free one)"
    )
    store = parser.add_mutually_exclusive_group()
    store.add_argument(
        "--data",
        type=Path,
        default=Path(DEFAULT_DATA),
        metavar="DIR",
        help="directory of the embedded durable store (fsync'd appends)",
    )
    store.add_argument(
        "--memory",
        action="store_true",
        help="keep everything in memory (nothing survives a restart)",
    )
    store.add_argument(
        "--redis",
        type=_redis_url,
        default=None,
        metavar="URL",
        help=(
            "keep streams in Redis at URL (redis://HOST:PORT/DB; or DURASYNC_REDIS_URL, which "
            "keeps a password out of ps): several durasync serve "
            "processes given the same URL act as one server (one order per stream, live "
            "reads see appends made through any node). An append is acknowledged when Redis "
            "replied; run Redis with appendonly yes + appendfsync always so that it survives "
            "a Redis crash. Redis unreachable: requests get 503 with Retry-After"
        ),
    )
    parser.add_argument(
        "--long-poll-timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="how long a long-poll GET waits for data before answering 204",
    )
    parser.add_argument(
        "--auth-secret",
        default=None,
        metavar="SECRET",
        help=(
            "require HS256 JWT bearer tokens signed with SECRET (claims: read, write, admin); "
            f"at least {MIN_SECRET_BYTES} bytes. Prefer DURASYNC_AUTH_SECRET or --config: "
            "a flag is visible in ps"
        ),
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="without --auth-secret, also admit non-loopback clients (trusted networks only)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        type=_origin,
        default=None,
        metavar="ORIGIN",
        help=(
            "allow browsers from ORIGIN (e.g. https://app.example) to read responses; "
            "repeatable. Default: any origin (*), for loopback development"
        ),
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=16 * 1024 * 1024,
        metavar="N",
        help="largest accepted request body; larger ones get 413",
    )
    parser.add_argument(
        "--max-append-messages",
        type=_positive_int,
        default=100_000,
        metavar="N",
        help="most messages one JSON-mode PUT or POST may carry; more get 413",
    )
    parser.add_argument(
        "--sse-max-duration",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="an SSE response ends after this long (the client reconnects from its offset)",
    )
    add_http_options(parser)
    add_room_options(parser)
    add_replication_options(parser)
    add_ops_options(parser)
    parser.set_defaults(func=run_serve)


def add_ops_options(parser: argparse.ArgumentParser) -> None:
    """Logs, metrics and the registry stream (docs/operations.md)."""
    group = parser.add_argument_group("operations")
    group.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log verbosity; info adds one access line per request and lifecycle lines",
    )
    group.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="log lines as text or as one JSON object per line",
    )
    group.add_argument(
        "--no-metrics",
        action="store_true",
        help="do not count anything nor serve GET /metrics (Prometheus)",
    )
    group.add_argument(
        "--registry-stream",
        action="store_true",
        help=(
            "keep the read-only __registry__ stream: one JSON event per stream created or "
            "deleted, for clients to discover streams"
        ),
    )


def add_http_options(parser: argparse.ArgumentParser) -> None:
    """Bounds of the HTTP connection layer (durasync.httpserver.HttpLimits)."""
    group = parser.add_argument_group("http connections")
    group.add_argument(
        "--max-header-bytes",
        type=_positive_int,
        default=32 * 1024,
        metavar="N",
        help="largest request line plus headers; larger get 431",
    )
    group.add_argument(
        "--max-headers",
        type=_positive_int,
        default=100,
        metavar="N",
        help="most header fields per request; more get 431",
    )
    group.add_argument(
        "--header-timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="a request head must arrive within this long of its first byte (else 408)",
    )
    group.add_argument(
        "--body-timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="a request body may make no progress for this long (else 408)",
    )
    group.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="close a connection that has no request and receives nothing for this long",
    )
    group.add_argument(
        "--write-timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="abort a connection whose client does not read a response for this long",
    )
    group.add_argument(
        "--max-connections",
        type=_positive_int,
        default=None,
        metavar="N",
        help=(
            "most open connections (HTTP and WebSocket); more get 503 and are closed "
            "(default: the open-file limit minus 64)"
        ),
    )


class ConfigError(Exception):
    """A setting of ``serve`` from the environment or a config file is unusable (one line)."""


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="durasync serve", allow_abbrev=False)
    add_serve_arguments(parser)
    return parser


def _convert(action: argparse.Action, value: object, where: str) -> object:
    """A config file or environment ``value`` for ``action``, checked like the flag's text."""
    name = action.option_strings[0].removeprefix("--")
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false")
        return value
    if isinstance(action, argparse._AppendAction):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {name} must be a list of strings")
        return [_convert_text(action, v, name, where) for v in value]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{where}: {name} must be a string or a number")
    return _convert_text(action, str(value), name, where)


def _convert_text(action: argparse.Action, text: str, name: str, where: str) -> object:
    try:
        value: object = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {name}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {name} must be one of {choices}, not {value!r}")
    return value


def _read_config(path: Path, parser: argparse.ArgumentParser) -> dict[str, object]:
    """Option values (by dest) from a TOML config file."""
    import tomllib

    where = f"config {path}"
    try:
        with path.open("rb") as file:
            raw = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    values: dict[str, object] = {}
    for key, value in raw.items():
        action = parser._option_string_actions.get("--" + key)
        if action is None or action.dest in ("config", "help"):
            raise ConfigError(f"{where}: unknown key {key!r} (keys are serve's option names)")
        values[action.dest] = _convert(action, value, where)
    chosen = [d for d in _STORE_DESTS if values.get(d) not in (None, False)]
    if len(chosen) > 1:
        raise ConfigError(
            f"{where}: set only one of data, memory, redis (found {', '.join(chosen)})"
        )
    return values


def resolve_serve_args(argv: Sequence[str], environ: Mapping[str, str]) -> argparse.Namespace:
    """``serve``'s options from flags, environment and config file, in that precedence.

    Raises:
        ConfigError: a bad config file or environment value, or an auth secret shorter than
            :data:`durasync.auth.MIN_SECRET_BYTES`; the message names the source.
        SystemExit: bad flags (argparse's usual exit 2).
    """
    parser = _serve_parser()
    # Which options the command line gave: argparse leaves preset attributes alone.
    # (Append actions copy the preset list before adding to it, so a fresh list works too.)
    unset: dict[str, object] = {
        a.dest: [] if isinstance(a, argparse._AppendAction) else object()
        for a in parser._actions
        if a.dest != "help"
    }
    explicit_ns = parser.parse_args(list(argv), argparse.Namespace(**unset))
    explicit = {d for d, sentinel in unset.items() if getattr(explicit_ns, d) is not sentinel}
    args = parser.parse_args(list(argv))
    layers: list[tuple[str, dict[str, object]]] = []
    if args.config is not None:
        layers.append((f"config {args.config}", _read_config(args.config, parser)))
    from_env: dict[str, object] = {}
    for dest, var in SERVE_ENVIRONMENT.items():
        text = environ.get(var)
        if text:
            from_env[dest] = _convert(
                parser._option_string_actions["--" + dest.replace("_", "-")], text, var
            )
    layers.append(("environment", from_env))
    sources: dict[str, str] = {d: "flag" for d in explicit}
    store_explicit = any(d in explicit for d in _STORE_DESTS)
    for where, values in layers:  # lowest precedence first
        if not store_explicit and any(values.get(d) not in (None, False) for d in _STORE_DESTS):
            # A store chosen here replaces the one a lower layer chose.
            for dest in _STORE_DESTS:
                setattr(args, dest, parser.get_default(dest))
        for dest, value in values.items():
            if dest in explicit or (store_explicit and dest in _STORE_DESTS):
                continue
            setattr(args, dest, value)
            sources[dest] = where
    if args.auth_secret is not None:
        size = len(args.auth_secret.encode())
        if size < MIN_SECRET_BYTES:
            source = sources.get("auth_secret", "flag")
            name = {
                "flag": "--auth-secret",
                "environment": SERVE_ENVIRONMENT["auth_secret"],
            }.get(source, f"{source}: auth-secret")
            raise ConfigError(
                f"{name} must be at least {MIN_SECRET_BYTES} bytes (got {size}); make one with: "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
    return args


def add_room_options(parser: argparse.ArgumentParser) -> None:
    """Options of the rooms layer (durasync.rooms.RoomSettings; docs/protocol.md)."""
    group = parser.add_argument_group("rooms")
    group.add_argument(
        "--room-snapshot-every",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="snapshot a room's graph every N journaled messages",
    )
    group.add_argument(
        "--room-snapshot-bytes",
        type=_positive_int,
        default=8 << 20,
        metavar="N",
        help="... or every N journaled bytes",
    )
    group.add_argument(
        "--room-retention",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="journal messages kept behind the latest snapshot (resume window)",
    )
    group.add_argument(
        "--room-idle-timeout",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="unload a room this long after its last member left",
    )
    group.add_argument(
        "--room-presence-timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="presence of a silent client expires after this",
    )
    group.add_argument(
        "--room-ping-interval",
        type=_positive_float,
        default=15.0,
        metavar="SECONDS",
        help="interval of server ping frames",
    )
    group.add_argument(
        "--room-max-frame-bytes",
        type=_positive_int,
        default=1 << 20,
        metavar="N",
        help="largest accepted client frame",
    )
    group.add_argument(
        "--room-send-queue-bytes",
        type=_positive_int,
        default=4 << 20,
        metavar="N",
        help="outgoing bytes queued per connection before 4008",
    )
    group.add_argument(
        "--room-rate",
        type=_positive_float,
        default=1000.0,
        metavar="PER_S",
        help="per-connection client frames per second, every frame type (burst: 2x)",
    )
    group.add_argument(
        "--room-sync-bytes",
        type=_positive_float,
        default=float(1 << 20),
        metavar="PER_S",
        help=(
            "per-connection bytes per second of work done on request: state frames answering"
            " sync, canonical JSON built for sync-check (burst: 8x)"
        ),
    )
    group.add_argument(
        "--room-max-counter-step",
        type=_positive_int,
        default=1 << 24,
        metavar="N",
        help=(
            "refuse a message whose Lamport time, clock entries or text seq exceed the room's"
            " highest so far by more than N"
        ),
    )
    add_websocket_options(parser)


#: uvicorn's WebSocket implementations (``uvicorn.Config(ws=...)``); "auto" is
#: websockets-sansio when the ``websockets`` package is installed (uvicorn >= 0.35).
WS_IMPLEMENTATIONS = ("auto", "websockets-sansio", "websockets", "wsproto")


def add_websocket_options(parser: argparse.ArgumentParser) -> None:
    """WebSocket transport options of ``serve`` (rooms are the only WebSocket endpoint)."""
    group = parser.add_argument_group("websocket")
    group.add_argument(
        "--ws-compression",
        action="store_true",
        help=(
            "accept permessage-deflate (RFC 7692) from clients that offer it (browsers do);"
            " off by default: room frames are small, so deflate saves little and costs CPU"
            " per frame plus ~40 KiB of zlib state per connection (bench/README.md, Rooms)"
        ),
    )
    group.add_argument(
        "--ws-impl",
        choices=WS_IMPLEMENTATIONS,
        default="auto",
        help="uvicorn WebSocket implementation (wsproto needs the wsproto package)",
    )


def room_settings(args: argparse.Namespace) -> Any:
    """RoomSettings from the parsed ``--room-*`` options."""
    from durasync.rooms import RoomSettings

    return RoomSettings(
        snapshot_every_messages=args.room_snapshot_every,
        snapshot_every_bytes=args.room_snapshot_bytes,
        retention_messages=args.room_retention,
        idle_timeout=args.room_idle_timeout,
        presence_timeout=args.room_presence_timeout,
        ping_interval=args.room_ping_interval,
        max_frame_bytes=args.room_max_frame_bytes,
        send_queue_bytes=args.room_send_queue_bytes,
        rate_per_second=args.room_rate,
        rate_burst=2 * args.room_rate,
        sync_bytes_per_second=args.room_sync_bytes,
        sync_bytes_burst=8 * args.room_sync_bytes,
        max_counter_step=args.room_max_counter_step,
    )


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="durasync",
        description=(
            "durasync: durable real-time sync: Durable Streams over HTTP and collaborative"
            " CRDT rooms over WebSocket."
        ),
    )
    parser.add_argument("--version", action="version", version=f"durasync {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_serve_command(subparsers)
    add_tail_command(subparsers)
    add_append_command(subparsers)
    add_p2p_command(subparsers)
    add_links_command(subparsers)
    return parser


class _Server(uvicorn.Server):
    """uvicorn server that announces the bound address and drains live requests."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        store_label: str,
        on_exit: Callable[[], None],
        json_lines: bool = False,
        on_started: Callable[[asyncio.AbstractEventLoop], None] | None = None,
    ):
        super().__init__(config)
        self._json_lines = json_lines
        self._store_label = store_label
        self._on_exit = on_exit
        self._on_started = on_started
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        if self.should_exit:
            return
        # Start-up objects (modules, the app, the store's metadata) live as
        # long as the process: take them out of the cyclic collector's reach
        # so its full passes only scan what traffic allocates; each full pass
        # is a latency spike for every live reader (figures: bench/README.md,
        # Streams).
        gc.collect()
        gc.freeze()
        # A higher young-generation threshold (CPython: 700) and rarer older passes: a busy
        # room server keeps a few hundred tracked objects per connection alive, so with the
        # defaults the collector runs young passes many times a second and long full passes
        # every few seconds (figures: bench/README.md, Rooms). Reference cycles are rare
        # here (frames and CRDT messages are untracked), so the later reclaim costs little
        # memory.
        gc.set_threshold(10_000, 50, 100)
        host, port = self.config.host, self.config.port
        for server in self.servers:
            for sock in server.sockets or ():
                port = sock.getsockname()[1]
                break
        shown = f"[{host}]" if ":" in host else host
        if self._on_started is not None:
            self._on_started(self._loop)
        self.say(
            f"durasync listening on http://{shown}:{port} (store: {self._store_label})",
            "listening",
            url=f"http://{shown}:{port}",
        )

    def say(self, line: str, event: str, **fields: object) -> None:
        """One lifecycle line on stderr whatever the log level: the text, or with
        ``--log-format json`` a JSON record of the same words with ``event`` and ``fields``
        (so one pattern finds both and every line of a JSON log parses)."""
        if self._json_lines:
            from durasync.logs import JsonFormatter

            record = logging.LogRecord("durasync.server", logging.INFO, "", 0, line, None, None)
            record.event = event
            for key, value in fields.items():
                setattr(record, key, value)
            line = JsonFormatter().format(record)
        print(line, file=sys.stderr, flush=True)

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Called from the signal handler: schedule the drain on the loop.
        if not self.should_exit and self.started:
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = str(sig)
            self.say(f"durasync shutting down ({name})", "shutting-down", signal=name)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_exit)
        # Unlike uvicorn's own handler we do not record the signal to re-raise
        # it after shutdown: a graceful SIGTERM shutdown exits with status 0.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def run_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code."""
    from durasync.httpserver import HttpLimits, bounded_protocol
    from durasync.logs import configure
    from durasync.server import ServerSettings, create_app
    from durasync.store import open_store
    from durasync.streams.app import StreamSettings

    log_format = getattr(args, "log_format", "text")
    configure(log_format, args.log_level)
    from durasync.replication.cli import load_replication
    from durasync.replication.config import LinkConfigError

    try:
        replication = load_replication(args.replicate)
    except LinkConfigError as exc:
        print(f"durasync: {exc}", file=sys.stderr)
        return 2
    if args.redis is not None:
        from durasync.store.redis import redact_url

        store = open_store(redis_url=args.redis)
        label = f"redis {redact_url(args.redis)}"
    elif args.memory:
        store = open_store(memory=True)
        label = "memory"
    else:
        data_dir = Path(args.data).resolve()
        store = open_store(memory=False, data_dir=data_dir)
        label = f"embedded at {data_dir}"
    settings = ServerSettings(
        streams=StreamSettings(
            long_poll_timeout=args.long_poll_timeout,
            max_body_bytes=args.max_body_bytes,
            max_append_messages=args.max_append_messages,
            sse_max_duration=args.sse_max_duration,
            cors_origins=tuple(args.cors_origin or ("*",)),
        ),
        http=HttpLimits(
            max_header_bytes=args.max_header_bytes,
            max_headers=args.max_headers,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            idle_timeout=args.idle_timeout,
            write_timeout=args.write_timeout,
            max_connections=args.max_connections,
        ),
        auth_secret=args.auth_secret,
        allow_remote=args.allow_remote,
        rooms=room_settings(args),
        redis_url=args.redis,
        metrics=not getattr(args, "no_metrics", False),
        registry_stream=getattr(args, "registry_stream", False),
        replication=replication,
    )
    app = create_app(store, settings)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        # Logging is configured above (durasync.logs): uvicorn's loggers use our format.
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=10,
        server_header=False,
        # HTTP/1.1 on uvicorn's httptools parser with our bounds (durasync.httpserver).
        http=bounded_protocol(settings.http, observer=app.state.request_log),
        # WebSocket transport (rooms): see add_websocket_options for why deflate is off.
        ws=getattr(args, "ws_impl", "auto"),
        ws_per_message_deflate=getattr(args, "ws_compression", False),
    )
    server = _Server(
        config,
        store_label=label,
        on_exit=app.state.begin_shutdown,
        json_lines=log_format == "json",
        on_started=lambda loop: _reload_on_sighup(loop, args.replicate, app.state.replication),
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        return 1
    server.say("durasync stopped", "stopped")
    return 0


def _subparser(parser: argparse.ArgumentParser, name: str | None) -> Any:
    """The parser of subcommand ``name`` (None if there is none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name is not None:
            return action.choices.get(name)
    return None


def _reload_on_sighup(loop: asyncio.AbstractEventLoop, path: Path | None, service: Any) -> None:
    """SIGHUP re-reads ``--replicate FILE`` and applies it; a bad file is logged and the
    running links stay as they are."""
    if path is None:
        return
    log = logging.getLogger("durasync.replication")

    def reload() -> None:
        from durasync.replication.cli import load_replication
        from durasync.replication.config import LinkConfigError

        try:
            config = load_replication(path)
        except LinkConfigError as exc:
            log.error("SIGHUP: %s (the links stay as they were)", exc)
            return

        async def apply() -> None:
            changes = await service.reload(config)
            log.warning("SIGHUP: replication reloaded: %s", changes)

        loop.create_task(apply())

    loop.add_signal_handler(signal.SIGHUP, reload)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(arguments)
    if unknown:
        # Reported with the subcommand's usage (argparse would show the top-level one).
        sub = _subparser(parser, getattr(args, "command", None)) or parser
        sub.error(f"unrecognized arguments: {' '.join(unknown)}")
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "serve":
        # The environment and a config file fill in what the flags did not give.
        try:
            args = resolve_serve_args(arguments[arguments.index("serve") + 1 :], os.environ)
        except ConfigError as exc:
            print(f"durasync serve: {exc}", file=sys.stderr)
            return 2
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
