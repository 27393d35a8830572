"""A ``durasync serve`` subprocess for end-to-end tests (loopback, bounded waits)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

LISTENING = re.compile(r"durasync listening on (http://\S+) \(store: (.+)\)")


class ServerProcess:
    """A ``durasync serve`` subprocess; ``url`` once it is listening."""

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
        """Signal the server and wait for it; returns its exit code."""
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
    return ServerProcess(list(args))
