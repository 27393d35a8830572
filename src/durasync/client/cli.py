"""``durasync tail`` and ``durasync append``: the stream client on the command line.

Registered in :mod:`durasync.cli` through :func:`add_tail_command` and
:func:`add_append_command`. The heavy imports (httpx, rich) happen only when a
command runs, so ``durasync serve`` does not pay for them.

Exit codes: 0 success, 1 failure (the server refused, the stream is missing,
the network stayed down past the retries), 2 usage error, 130 interrupted
(Ctrl-C; what was already acknowledged stays appended, nothing is half-written
to stdout).

Output of ``tail`` (one line per message):

- ``application/json`` streams: each message as compact JSON on its own line
  (the same with or without ``--json``);
- other streams without ``--json``: the bytes as they arrive (``append``
  writes one line per message, so these are lines too). When stdout is a
  terminal, invalid UTF-8 and control characters are shown as ``\\xNN``
  escapes so binary data cannot garble the terminal; when it is a pipe or a
  file the bytes are written unchanged;
- other streams with ``--json``: one JSON object per received chunk,
  ``{"offset": ..., "text": ...}`` when the chunk is UTF-8 and
  ``{"offset": ..., "base64": ...}`` otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import re
import stat
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

__all__ = ["add_append_command", "add_tail_command", "run_append", "run_tail"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: One POST carries at most this many lines / bytes (the server's default
#: body limit is 16 MiB; smaller batches keep a retry cheap).
MAX_BATCH_LINES = 1000
MAX_BATCH_BYTES = 1 << 20
#: Lines read ahead of the appender (bounded: a fast stdin waits for the network).
READ_AHEAD_LINES = 4 * MAX_BATCH_LINES
#: The progress bar appears once an input has run this long (short inputs stay quiet).
PROGRESS_AFTER_S = 0.5

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _stream_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"not an http(s) stream URL: {text!r} (e.g. http://127.0.0.1:4437/v1/stream/NAME)"
        )
    if not parts.path.strip("/"):
        raise argparse.ArgumentTypeError(f"the URL names no stream: {text!r}")
    return text


def _offset(text: str) -> str:
    if not text or any(c.isspace() for c in text) or len(text) > 256:
        raise argparse.ArgumentTypeError(f"not an offset: {text!r}")
    return text


class _IntermixedParser(argparse.ArgumentParser):
    """Parses options and positionals in any order (``URL --create DATA``).

    Plain argparse binds every positional at the first run of positionals,
    so an optional positional after an option is rejected as unrecognized;
    ``parse_known_intermixed_args`` (which itself calls ``parse_known_args``)
    does not have that problem.
    """

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def add_tail_command(subparsers: Any) -> None:
    """Register ``durasync tail``."""
    parser = subparsers.add_parser(
        "tail",
        help="print a stream's messages as they arrive",
        description=textwrap.fill(
            "Print the messages of a Durable Stream from an offset, then wait for more. "
            "Network cuts and server restarts are retried forever from the last printed "
            "offset, so nothing is skipped or printed twice. JSON streams print one compact "
            "message per line; byte streams print their bytes (escaped on a terminal)."
        ),
        epilog=(
            "examples:\n"
            "  durasync tail http://127.0.0.1:4437/v1/stream/chat\n"
            "  durasync tail URL --from now --live sse\n"
            "  durasync tail URL --checkpoint chat.offset   # resume where the last run stopped"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", type=_stream_url, metavar="URL", help="the stream's URL")
    parser.add_argument(
        "--from",
        dest="offset",
        type=_offset,
        default="-1",
        metavar="OFFSET",
        help="start offset: -1 = beginning (default), now = only new messages, or an offset "
        "printed by the server (ignored when the --checkpoint file has one)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output: one JSON value per line for every stream type",
    )
    parser.add_argument(
        "--live",
        choices=["long-poll", "sse"],
        default="long-poll",
        help="how to wait for new messages (default: long-poll)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="FILE",
        help="keep the offset of the last printed message in FILE (written atomically) "
        "and start from it next time",
    )
    parser.add_argument(
        "--until-up-to-date",
        action="store_true",
        help="exit once everything written so far was printed, instead of waiting",
    )
    parser.set_defaults(func=run_tail)


def add_append_command(subparsers: Any) -> None:
    """Register ``durasync append``."""
    parser = subparsers.add_parser(
        "append",
        help="append DATA or stdin lines to a stream",
        description=textwrap.fill(
            "Append DATA as one message, or each line of stdin as one message (DATA omitted "
            "or '-'). Lines are sent in batches through an idempotent producer, so a retry "
            "after a timeout or a server restart never duplicates a line. On a JSON stream "
            "each line must be one JSON value. A progress bar is shown on a terminal for "
            "long inputs."
        ),
        epilog=(
            "examples:\n"
            "  durasync append URL 'hello'\n"
            "  durasync append URL --create --content-type application/json '{\"a\": 1}'\n"
            "  journalctl -o json | durasync append URL --create --content-type "
            "application/json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The subparser is created by add_parser; make it parse intermixed.
    parser.__class__ = _IntermixedParser
    parser.add_argument("url", type=_stream_url, metavar="URL", help="the stream's URL")
    parser.add_argument(
        "data",
        nargs="?",
        default="-",
        metavar="DATA",
        help="the message to append; '-' or nothing reads lines from stdin",
    )
    parser.add_argument(
        "--content-type",
        default=None,
        metavar="TYPE",
        help="the stream's content type (default: the existing stream's; with --create: "
        "application/octet-stream)",
    )
    parser.add_argument(
        "--create",
        action="store_true",
        help="create the stream first if it does not exist (with --content-type)",
    )
    parser.set_defaults(func=run_append)


# -- shared ---------------------------------------------------------------------------


def _fail(command: str, message: str) -> int:
    print(f"durasync {command}: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILURE


def _run(command: str, main: Any) -> int:
    """Run ``main`` (a coroutine) mapping errors to exit codes and messages."""
    from durasync.client.errors import StreamError, StreamNotFound

    try:
        result: int = asyncio.run(main)
        return result
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except StreamNotFound as exc:
        hint = " (use --create to create it)" if command == "append" else ""
        return _fail(command, f"stream not found: {exc.url}{hint}")
    except StreamError as exc:
        return _fail(command, str(exc))
    except ValueError as exc:  # bad checkpoint file, bad JSON input line
        return _fail(command, str(exc))
    except OSError as exc:  # network down past the retries, unwritable checkpoint
        return _fail(command, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # httpx errors past the retries
        import httpx

        if isinstance(exc, httpx.HTTPError):
            return _fail(command, f"{type(exc).__name__}: {exc or 'network error'}")
        raise


def _is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


def _client() -> Any:
    from durasync.client.streams import StreamClient

    return StreamClient(timeout=10.0, live_timeout=75.0)


# -- tail -----------------------------------------------------------------------------


def run_tail(args: argparse.Namespace) -> int:
    """``durasync tail``: returns the exit code."""
    return _run("tail", _tail(args))


class _Printer:
    """Writes batches to stdout per the module's output rules; flushes each batch."""

    def __init__(self, out: IO[bytes], *, as_json: bool, terminal: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.terminal = terminal

    def write(self, data: bytes, offset: str, content_type: str | None) -> None:
        if _is_json(content_type):
            if data.strip():
                messages = json.loads(data)
                if not isinstance(messages, list):
                    raise ValueError("JSON-mode batch is not an array")
                for m in messages:
                    self._line(json.dumps(m, separators=(",", ":"), ensure_ascii=False))
        elif self.as_json:
            try:
                doc = {"offset": offset, "text": data.decode("utf-8")}
            except UnicodeDecodeError:
                doc = {"offset": offset, "base64": base64.b64encode(data).decode("ascii")}
            self._line(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))
        elif self.terminal:
            text = data.decode("utf-8", errors="backslashreplace")
            text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
            self.out.write(text.encode("utf-8"))
        else:
            self.out.write(data)
        self.out.flush()

    def _line(self, text: str) -> None:
        self.out.write(text.encode("utf-8", errors="backslashreplace") + b"\n")


async def _tail(args: argparse.Namespace) -> int:
    from durasync.client.streams import _read_checkpoint, _write_checkpoint

    offset: str = args.offset
    ckpt: Path | None = args.checkpoint
    if ckpt is not None:
        saved = await asyncio.to_thread(_read_checkpoint, ckpt)
        if saved is not None:
            offset = saved
    printer = _Printer(sys.stdout.buffer, as_json=args.json, terminal=sys.stdout.isatty())
    async with _client() as client:
        # The checkpoint is written here, after the batch is printed and
        # flushed (not by StreamClient.tail, which writes it only when the
        # next batch is requested): Ctrl-C then never reprints a batch.
        tail = client.tail(
            args.url, offset=offset, live=args.live, stop_at_up_to_date=args.until_up_to_date
        )
        async with contextlib.aclosing(tail):
            async for batch in tail:
                printer.write(batch.data, batch.offset, batch.content_type)
                if ckpt is not None:
                    await asyncio.to_thread(_write_checkpoint, ckpt, batch.next_offset)
    return EXIT_OK


# -- append ---------------------------------------------------------------------------


def run_append(args: argparse.Namespace) -> int:
    """``durasync append``: returns the exit code."""
    return _run("append", _append(args))


async def _prepare(client: Any, args: argparse.Namespace) -> str:
    """Create or inspect the stream; returns its content type."""
    if args.create:
        info = await client.create(
            args.url, content_type=args.content_type or "application/octet-stream"
        )
        return str(info.content_type or args.content_type or "application/octet-stream")
    info = await client.head(args.url)  # StreamNotFound -> "use --create"
    if args.content_type is not None:
        # Let the server judge a mismatch (409 -> StreamConflict with its reason).
        return str(args.content_type)
    return str(info.content_type or "application/octet-stream")


def _json_line(line: bytes, number: int) -> bytes | None:
    """The JSON value of an input line (None for a blank line).

    Raises:
        ValueError: the line is not one JSON value.
    """
    import msgspec

    stripped = line.strip()
    if not stripped:
        return None
    try:
        msgspec.json.decode(stripped)
    except msgspec.DecodeError as exc:
        raise ValueError(f"stdin line {number} is not JSON: {exc}") from None
    return stripped


async def _append(args: argparse.Namespace) -> int:
    async with _client() as client:
        content_type = await _prepare(client, args)
        producer = client.producer(args.url, content_type=content_type)
        is_json = _is_json(content_type)
        if args.data != "-":
            data: bytes = args.data.encode("utf-8", errors="surrogateescape")
            if is_json:
                value = _json_line(data, 1)
                if value is None:
                    raise ValueError("DATA is empty, not a JSON value")
                # Wrapped: a JSON array DATA is one message, not one per element (DS §5).
                data = b"[" + value + b"]"
            await producer.append(data)
            return EXIT_OK
        return await _append_lines(producer, is_json)


def _input_size() -> int | None:
    try:
        st = os.fstat(sys.stdin.fileno())
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


async def _append_lines(producer: Any, is_json: bool) -> int:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(READ_AHEAD_LINES)
    failure: list[BaseException] = []

    def reader() -> None:
        # A daemon thread: blocking stdin reads must not hold up Ctrl-C.
        try:
            for line in sys.stdin.buffer:
                asyncio.run_coroutine_threadsafe(queue.put(line), loop).result()
        except BaseException as exc:
            failure.append(exc)
        # The loop may be gone (RuntimeError) or have cancelled the put when
        # the append failed and the command is exiting: nothing left to tell.
        with contextlib.suppress(RuntimeError, concurrent.futures.CancelledError):
            asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    threading.Thread(target=reader, name="durasync-append-stdin", daemon=True).start()
    progress = _Progress(total=_input_size())
    lines = sent_bytes = 0
    eof = False
    try:
        while not eof:
            first = await queue.get()
            if first is None:
                break
            batch = [first]
            size = len(first)
            while len(batch) < MAX_BATCH_LINES and size < MAX_BATCH_BYTES:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    eof = True
                    break
                batch.append(item)
                size += len(item)
            if is_json:
                values = []
                for i, line in enumerate(batch, lines + 1):
                    value = _json_line(line, i)
                    if value is not None:
                        values.append(value)
                body = b"[" + b",".join(values) + b"]" if values else b""
            else:
                body = b"".join(batch)
            if body:
                await producer.append(body)
            lines += len(batch)
            sent_bytes += size
            progress.update(sent_bytes, lines)
    finally:
        progress.stop()
    if failure:
        raise failure[0]
    progress.summary(sent_bytes, lines)
    return EXIT_OK


class _Progress:
    """A rich progress bar on stderr, only on a terminal and only for long inputs."""

    def __init__(self, *, total: int | None) -> None:
        self.enabled = sys.stderr.isatty()
        self.total = total
        self.started = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def update(self, done_bytes: int, lines: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            if time.monotonic() - self.started < PROGRESS_AFTER_S:
                return
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("appending"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TextColumn("{task.fields[lines]} lines"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("append", total=self.total, lines=0)
        self._bar.update(self._task, completed=done_bytes, lines=lines)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def summary(self, done_bytes: int, lines: int) -> None:
        if self.enabled:
            print(f"appended {lines} lines ({done_bytes} bytes)", file=sys.stderr, flush=True)
