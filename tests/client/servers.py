"""Durable Streams servers as subprocesses for the client tests (loopback, bounded).

- ``ref``: the npm reference server ``@durable-streams/server`` via
  ``tests/js/ref-server.mjs`` (owned by the streams tests; reused as is).
- ``durasync``: ``python -m durasync serve``.

Both accept ``port`` (0 = free) and ``data_dir`` (None = memory) so a test can
stop a server and start it again on the same port with the same data.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

JS_DIR = Path(__file__).resolve().parent.parent / "js"
_LINE = re.compile(r"listening on (http://\S+)")


class ServerProc:
    """A server subprocess; ``url`` (http://127.0.0.1:PORT) once listening."""

    def __init__(self, kind: str, *, port: int = 0, data_dir: Path | None = None) -> None:
        self.kind = kind
        if kind == "ref":
            args = ["node", str(JS_DIR / "ref-server.mjs"), "--port", str(port)]
            args += ["--long-poll-timeout-ms", "500", "--exit-on-stdin-close"]
            if data_dir is not None:
                args += ["--data-dir", str(data_dir)]
            cwd: Path | None = JS_DIR
        elif kind == "durasync":
            args = [sys.executable, "-m", "durasync", "serve", "--host", "127.0.0.1"]
            args += ["--port", str(port), "--long-poll-timeout", "0.5"]
            args += ["--data", str(data_dir)] if data_dir is not None else ["--memory"]
            cwd = None
        else:
            raise ValueError(kind)
        self.output: list[str] = []
        self.url = ""
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(30) or not self.url:
            self.stop()
            raise RuntimeError(f"{kind} server did not start:\n" + "".join(self.output[-20:]))
        self.url = self.url.rstrip("/")
        self.port = int(self.url.rsplit(":", 1)[1])

    @property
    def base(self) -> str:
        """Base URL of streams: ``{url}/v1/stream/``."""
        return self.url + "/v1/stream/"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if len(self.output) < 1000:
                self.output.append(line)
            m = _LINE.search(line)
            if m and not self._ready.is_set():
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process (SIGKILL for a crash); waits at most ~15 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self._reader.join(5)
