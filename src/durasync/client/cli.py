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
import contextlib
import dataclasses
import json
import os
import re
import stat
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from durasync import httpwire

__all__ = ["add_append_command", "add_tail_command", "run_append", "run_tail"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: One POST carries at most this many lines / bytes (the server's default
#: body limit is 16 MiB; smaller batches keep a retry cheap).
MAX_BATCH_LINES = 1000
MAX_BATCH_BYTES = 1 << 20
#: stdin is read in chunks of up to this many bytes, split into lines, and the lines wait for
#: the sender in a buffer of at most READ_AHEAD_BYTES (then the reader waits: a fast stdin
#: waits for the network), so the input read ahead stays under about 5 MiB plus one line.
READ_CHUNK_BYTES = 1 << 20
READ_AHEAD_BYTES = 4 << 20
#: The longest input line ``append`` takes (the server's default body limit is 16 MiB).
MAX_LINE_BYTES = 16 << 20
#: ``tail --until-up-to-date`` gives up after this many seconds of failures in a row.
UNTIL_UP_TO_DATE_GIVE_UP = 30.0
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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number of seconds: {text!r}")
    return value


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
    parser.add_argument(
        "--give-up-after",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="exit 1 once the server could not be reached (or kept failing) for SECONDS in a "
        "row; 0 = retry forever. Default: forever, or "
        f"{UNTIL_UP_TO_DATE_GIVE_UP:g} s with --until-up-to-date. Each retry prints one line "
        "to stderr",
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
            "each line must be one JSON value; a bad line stops the run after every line before "
            "it was appended. A progress bar is shown on a terminal for long inputs, and one "
            "summary line on stderr at the end (--quiet: none)."
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
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no summary line on stderr (errors are still reported)",
    )
    parser.set_defaults(func=run_append)


# -- shared ---------------------------------------------------------------------------


def _fail(command: str, message: str) -> int:
    print(f"durasync {command}: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILURE


def _run(command: str, main: Any, url: str) -> int:
    """Run ``main`` (a coroutine) mapping errors to exit codes and one-line messages;
    network errors name ``url``."""
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
    except Exception as exc:  # network down past the retries, unwritable checkpoint
        import httpx

        if isinstance(exc, (httpx.HTTPError, TimeoutError)):
            return _fail(command, f"cannot reach {url}: {_reason(exc)}")
        if isinstance(exc, OSError):
            return _fail(command, f"{type(exc).__name__}: {exc}")
        raise


def _reason(exc: BaseException) -> str:
    """``Type: message`` of a network error (the type alone when it has no message)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _client() -> Any:
    from durasync.client.streams import StreamClient

    return StreamClient(timeout=10.0, live_timeout=75.0)


# -- tail -----------------------------------------------------------------------------


def run_tail(args: argparse.Namespace) -> int:
    """``durasync tail``: returns the exit code."""
    return _run("tail", _tail(args), args.url)


class _Printer:
    """Writes batches to stdout per the module's output rules; flushes each batch."""

    def __init__(self, out: IO[bytes], *, as_json: bool, terminal: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.terminal = terminal

    def write(self, data: bytes, offset: str, content_type: str | None) -> None:
        if httpwire.is_json(content_type):
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
        give_up: float | None = args.give_up_after
        if give_up is None and args.until_up_to_date:
            give_up = UNTIL_UP_TO_DATE_GIVE_UP
        tail = client.tail(
            args.url,
            offset=offset,
            live=args.live,
            stop_at_up_to_date=args.until_up_to_date,
            on_retry=lambda exc, delay: _retrying(args.url, exc, delay),
            give_up_after=give_up or None,
        )
        async with contextlib.aclosing(tail):
            async for batch in tail:
                printer.write(batch.data, batch.offset, batch.content_type)
                if ckpt is not None:
                    await asyncio.to_thread(_write_checkpoint, ckpt, batch.next_offset)
    return EXIT_OK


def _retrying(url: str, exc: BaseException, delay: float) -> None:
    from durasync.client.errors import StreamError

    reason = str(exc) if isinstance(exc, StreamError) else f"cannot reach {url}: {_reason(exc)}"
    print(f"durasync tail: {reason}; retrying in {delay:.1f} s", file=sys.stderr, flush=True)


# -- append ---------------------------------------------------------------------------


def run_append(args: argparse.Namespace) -> int:
    """``durasync append``: returns the exit code."""
    return _run("append", _append(args), args.url)


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


def _json_value(line: bytes) -> bytes | None:
    """The JSON value of an input line (None for a blank line).

    Raises:
        ValueError: the line is not one JSON value (the decoder's reason).
    """
    import msgspec

    stripped = line.strip()
    if not stripped:
        return None
    try:
        msgspec.json.decode(stripped)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None
    return stripped


class BadLine(ValueError):
    """An input line ``append`` cannot send; every line before it was appended, none after."""


def _bad_line(number: int, problem: str) -> BadLine:
    done = f"lines 1-{number - 1} were appended" if number > 1 else "nothing was appended"
    return BadLine(f"stdin line {number} {problem}; {done}, line {number} and after were not")


async def _append(args: argparse.Namespace) -> int:
    async with _client() as client:
        content_type = await _prepare(client, args)
        producer = client.producer(args.url, content_type=content_type)
        is_json = httpwire.is_json(content_type)
        if args.data != "-":
            started = time.monotonic()
            data: bytes = args.data.encode("utf-8", errors="surrogateescape")
            if is_json:
                try:
                    value = _json_value(data)
                except ValueError as exc:
                    raise ValueError(f"DATA is not JSON: {exc}") from None
                if value is None:
                    raise ValueError("DATA is empty, not a JSON value")
                # Wrapped: a JSON array DATA is one message, not one per element (DS §5).
                data = b"[" + value + b"]"
            await producer.append(data)
            _summary(_Counts(messages=1, lines=1, bytes=len(data)), started, args.quiet)
            return EXIT_OK
        return await _append_lines(producer, is_json, args.quiet)


def _input_size() -> int | None:
    try:
        st = os.fstat(sys.stdin.fileno())
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


@dataclasses.dataclass
class _Counts:
    """What ``append`` has sent so far (acknowledged by the server)."""

    messages: int = 0
    lines: int = 0
    bytes: int = 0


def _summary(counts: _Counts, started: float, quiet: bool) -> None:
    if quiet:
        return
    seconds = time.monotonic() - started
    noun = "message" if counts.messages == 1 else "messages"
    print(
        f"appended {counts.messages} {noun} ({counts.bytes} bytes) in {seconds:.2f} s",
        file=sys.stderr,
        flush=True,
    )


async def _append_lines(producer: Any, is_json: bool, quiet: bool) -> int:
    """Append each stdin line as one message, in batches of what is ready.

    A reader thread reads stdin in chunks (whatever one read returns, up to
    :data:`READ_CHUNK_BYTES`), splits them into lines and adds them to a
    :class:`_LineBuffer` (at most :data:`READ_AHEAD_BYTES` wait); the sender
    takes every line that is ready and sends POSTs of at most
    :data:`MAX_BATCH_LINES` lines and :data:`MAX_BATCH_BYTES` bytes, one at a
    time, so lines read while a POST is in flight go into the next one.

    Raises:
        BadLine: a line of a JSON stream is not JSON, or a line is longer than
            :data:`MAX_LINE_BYTES`; every line before it was appended, none after.
    """
    buffer = _LineBuffer(asyncio.get_running_loop(), READ_AHEAD_BYTES)

    def reader() -> None:
        # A daemon thread: blocking stdin reads must not hold up Ctrl-C.
        try:
            for lines, size in _read_lines(sys.stdin.buffer, buffer.stopped):
                buffer.put(lines, size)
        except BaseException as exc:
            buffer.finish(exc)
            return
        buffer.finish(None)

    threading.Thread(target=reader, name="durasync-append-stdin", daemon=True).start()
    progress = _Progress(total=_input_size())
    counts = _Counts()
    pending: list[bytes] = []  # lines taken from the buffer; pending[sent:] not yet sent
    sent = 0
    try:
        while True:
            if len(pending) - sent < MAX_BATCH_LINES:
                # Everything ready joins; wait only when there is nothing to send.
                more = await buffer.take(wait=sent == len(pending))
                pending = pending[sent:] + more if sent < len(pending) else more
                sent = 0
            if sent == len(pending):
                break  # end of input (or the reader failed: raised below)
            batch = _cut_batch(pending, sent)
            sent += len(batch)
            await _send_batch(producer, batch, is_json, counts)
            progress.update(counts.bytes, counts.lines)
    finally:
        buffer.stop()
        progress.stop()
    if isinstance(buffer.error, LineTooLong):
        raise _bad_line(counts.lines + 1, str(buffer.error)) from None
    if buffer.error is not None:
        raise buffer.error
    _summary(counts, progress.started, quiet)
    return EXIT_OK


class _LineBuffer:
    """Lines handed from the stdin reader thread to the sender on the event loop, bounded in
    bytes: the reader blocks while :attr:`limit` bytes wait (a fast stdin waits for the
    network)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.limit = limit
        self.error: BaseException | None = None
        #: Set when the sender stops taking (done or failed): the reader stops reading.
        self.stopped = threading.Event()
        self._loop = loop
        self._cond = threading.Condition()
        self._lines: list[bytes] = []
        self._bytes = 0
        self._done = False
        self._ready = asyncio.Event()

    def _wake(self) -> None:
        # The loop may be gone when the command is exiting: nobody left to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ready.set)

    def put(self, lines: list[bytes], size: int) -> None:
        """(Reader thread) add ``lines`` (``size`` bytes), waiting while the buffer is full."""
        with self._cond:
            while self._bytes >= self.limit and not self.stopped.is_set():
                self._cond.wait()
            self._lines.extend(lines)
            self._bytes += size
        self._wake()

    def finish(self, error: BaseException | None) -> None:
        """(Reader thread) the input ended, or reading it failed with ``error``."""
        with self._cond:
            self._done = True
            self.error = error
        self._wake()

    async def take(self, *, wait: bool) -> list[bytes]:
        """(Sender) every line ready; with ``wait``, first wait for one or for the end."""
        while True:
            self._ready.clear()
            with self._cond:
                if self._lines or self._done or not wait:
                    lines, self._lines, self._bytes = self._lines, [], 0
                    self._cond.notify_all()
                    return lines
            await self._ready.wait()

    def stop(self) -> None:
        """(Sender) no more taking: release a reader waiting for room."""
        self.stopped.set()
        with self._cond:
            self._cond.notify_all()


def _cut_batch(pending: list[bytes], start: int) -> list[bytes]:
    """The lines of ``pending`` from ``start`` that fit one POST (at least one)."""
    batch = pending[start : start + MAX_BATCH_LINES]
    if sum(map(len, batch)) <= MAX_BATCH_BYTES:
        return batch  # the usual case: lines shorter than MAX_BATCH_BYTES / MAX_BATCH_LINES
    size = n = 0
    for line in batch:
        if n and size + len(line) > MAX_BATCH_BYTES:
            break
        size += len(line)
        n += 1
    return batch[:n]


async def _send_batch(producer: Any, batch: list[bytes], is_json: bool, counts: _Counts) -> None:
    """POST ``batch`` (one message per line) and count it.

    Raises:
        BadLine: a line of a JSON stream is not JSON; the lines before it are sent first.
    """
    bad: BadLine | None = None
    if is_json:
        import msgspec

        values = [v for v in (line.strip() for line in batch) if v]
        try:
            for value in values:
                msgspec.json.decode(value)
        except msgspec.DecodeError:
            # Find the first bad line (and its number) the slow way.
            values = []
            for i, line in enumerate(batch):
                try:
                    v = _json_value(line)
                except ValueError as exc:
                    bad = _bad_line(counts.lines + i + 1, f"is not JSON: {exc}")
                    batch = batch[:i]
                    break
                if v is not None:
                    values.append(v)
        body = b"[" + b",".join(values) + b"]" if values else b""
        messages = len(values)
    else:
        body = b"".join(batch)
        messages = len(batch)
    if body:
        await producer.append(body)
    counts.messages += messages
    counts.lines += len(batch)
    counts.bytes += sum(map(len, batch))
    if bad is not None:
        raise bad


class LineTooLong(ValueError):
    """An input line is longer than :data:`MAX_LINE_BYTES` (raised by the stdin reader)."""


def _read_lines(stream: IO[bytes], stop: threading.Event) -> Iterator[tuple[list[bytes], int]]:
    """The complete lines of each chunk read from ``stream``, with their size in bytes (the
    last line of the input may lack its newline).

    Raises:
        LineTooLong: a line is longer than :data:`MAX_LINE_BYTES`.
    """
    rest = b""
    read = getattr(stream, "read1", stream.read)
    while not stop.is_set():
        chunk = read(READ_CHUNK_BYTES)
        if not chunk:
            break
        data = rest + chunk if rest else chunk
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if len(rest) > MAX_LINE_BYTES:
            raise LineTooLong(f"is longer than {MAX_LINE_BYTES} bytes")
        if cut:
            # Lines end at b"\n" only (bytes.splitlines would also cut at b"\r").
            yield [line + b"\n" for line in data[: cut - 1].split(b"\n")], cut
    if rest and not stop.is_set():
        yield [rest], len(rest)


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
