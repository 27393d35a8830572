"""What the tests share: waiting on conditions, free loopback ports, ``durasync serve`` processes.

- :func:`eventually` (async) and :func:`wait_until` (blocking, for tests that drive servers in
  other processes from plain functions) poll a condition that no single event signals, with a
  bound; on timeout they fail with the condition's description. Prefer an event or a count the
  code exposes (a notifier's waiters, a server's live count) as the condition, never a sleep.
- :func:`free_port`: a port on 127.0.0.1 that was free a moment ago (for servers that must
  come back on the same port; otherwise start servers on port 0 and read the port back).
- :func:`random_seed`: a fresh seed for a randomized test, printed (pytest shows it with a
  failure) and overridable with ``DURASYNC_TEST_SEED`` to replay a failure.
- :class:`ServerProcess` / :func:`start_server`: ``python -m durasync serve`` on loopback; a
  fixture stops it by its PID (:meth:`ServerProcess.stop`), also when the test failed.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable

__all__ = [
    "ServerProcess",
    "eventually",
    "free_port",
    "random_seed",
    "start_server",
    "wait_until",
]

#: Poll interval of :func:`eventually` and :func:`wait_until` (seconds).
POLL = 0.005


def _describe(predicate: object) -> str:
    try:
        return inspect.getsource(predicate).strip()  # type: ignore[arg-type]
    except (OSError, TypeError):
        return repr(predicate)


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,  # noqa: ASYNC109 - the bound of a polled condition, not of an await
) -> None:
    """Wait until ``predicate()`` (sync or async) is true, polling every few milliseconds.

    Raises AssertionError naming the predicate when it is still false after ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {_describe(predicate)}")
        await asyncio.sleep(POLL)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Blocking :func:`eventually` for synchronous tests (threads, subprocesses)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {_describe(predicate)}")
        time.sleep(POLL * 2)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free when asked (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def random_seed() -> int:
    """A seed for a randomized test: ``DURASYNC_TEST_SEED`` if set, else a fresh one; printed,
    so a failing run's captured output names the seed that replays it."""
    fixed = os.environ.get("DURASYNC_TEST_SEED")
    seed = int(fixed) if fixed else random.randrange(1 << 30)
    print(f"random seed: {seed} (replay with DURASYNC_TEST_SEED={seed})")
    return seed


LISTENING = re.compile(r"durasync listening on (http://\S+) \(store: (.+)\)")


class ServerProcess:
    """A ``durasync serve`` subprocess on 127.0.0.1; ``url`` once it is listening."""

    def __init__(
        self, args: list[str], *, timeout: float = 20.0, env: dict[str, str] | None = None
    ) -> None:
        self.args = [sys.executable, "-m", "durasync", "serve", "--host", "127.0.0.1", *args]
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self._ready = threading.Event()
        self.url = ""
        self.store_label = ""
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or not self.url:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.output[-30:]))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.output.append(line)
            match = LISTENING.search(line)
            if match and not self._ready.is_set():
                self.url, self.store_label = match.group(1), match.group(2)
                self._ready.set()
        self._ready.set()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the server (by its PID) and wait for it; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode


def start_server(*args: str) -> ServerProcess:
    """``durasync serve ARGS...`` (``--port 0`` for a free port, read back from ``url``)."""
    return ServerProcess(list(args))
