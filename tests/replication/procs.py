"""``durasync serve`` processes for the replication e2e tests (loopback, stopped by PID).

:class:`Serve` starts ``python -m durasync serve`` on a free (or given) port with an
embedded store in its own directory, optionally with ``--replicate FILE``; ``kill()`` is a
SIGKILL and ``start()`` again brings it back on the same port with the same data.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

_LINE = re.compile(r"listening on (http://\S+)")


class Serve:
    """One server process; ``url`` once listening. Always ``stop()`` it (fixtures do)."""

    def __init__(
        self,
        data_dir: Path | None,
        *,
        port: int = 0,
        replicate: Path | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.replicate = replicate
        self.extra = list(extra or [])
        self.output: list[str] = []
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self) -> Serve:
        args = [sys.executable, "-m", "durasync", "serve", "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--long-poll-timeout", "1"]
        args += ["--data", str(self.data_dir)] if self.data_dir is not None else ["--memory"]
        if self.replicate is not None:
            args += ["--replicate", str(self.replicate)]
        args += ["--log-level", "warning", *self.extra]
        self._ready = threading.Event()
        self.url = ""
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        if not self._ready.wait(30) or not self.url:
            self.stop()
            raise RuntimeError("durasync serve did not start:\n" + "".join(self.output[-30:]))
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if len(self.output) < 5000:
                self.output.append(line)
            m = _LINE.search(line)
            if m and not self._ready.is_set():
                self.url = m.group(1).rstrip("/")
                self._ready.set()
        self._ready.set()

    @property
    def base(self) -> str:
        return self.url + "/v1/stream/"

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL (a crash); the process is reaped."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 10 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)

    def log(self) -> str:
        return "".join(self.output[-60:])
