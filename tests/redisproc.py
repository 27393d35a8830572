"""A real ``redis-server`` subprocess for tests and benchmarks (loopback, own port, own dir).

``make test`` installs Debian's ``redis-server`` when it is missing (Makefile ``redis-deps``);
nothing here installs anything. Every server gets a fresh free port on 127.0.0.1 and its own
working directory, so tests never touch a Redis they did not start, and it is stopped by PID.

Usage::

    with RedisServer(tmp_path) as redis:   # appendonly yes, appendfsync always
        url = redis.url                    # redis://127.0.0.1:PORT/0
        redis.kill()                       # SIGKILL (data since the last fsync may go)
        redis.start()                      # same port, same dir: reloads the AOF
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from helpers import free_port

__all__ = ["RedisServer", "free_port", "redis_server_path"]


def redis_server_path() -> str:
    """Path of ``redis-server``; raises RuntimeError naming the fix when it is missing."""
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server not found: run `make test` (it installs it) or apt-get")
    return path


class RedisServer:
    """One ``redis-server`` on 127.0.0.1; persistence AOF with ``appendfsync`` as given."""

    def __init__(
        self,
        workdir: Path,
        *,
        appendfsync: str = "always",
        port: int | None = None,
        start: bool = True,
    ) -> None:
        self.dir = Path(workdir) / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) the server on the same port and directory; wait until it answers."""
        if self.proc is not None and self.proc.poll() is None:
            return
        args = [
            redis_server_path(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_tail()}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout}s: {self.log_tail()}")

    def ping(self) -> bool:
        """True once the server answers PING with PONG and has finished loading its AOF."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def log_tail(self) -> str:
        try:
            return (self.dir / "redis.log").read_text()[-2000:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the server (a crash) and wait for it."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the server (ours, by PID) and wait; SIGKILL if it does not exit in time."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
