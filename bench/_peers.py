"""Start Durable Streams servers as subprocesses on loopback: ours and the npm reference.

Used by ``bench/streams.py`` and the interop tests (``tests/interop``). Each
server is started on a free port (``--port 0``); we wait for its "listening"
line with a deadline and stop it by PID (SIGTERM, then SIGKILL after a grace
period). Output pipes are drained by a thread so a chatty server never blocks.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "tests" / "js"
REF_SERVER_SCRIPT = JS_DIR / "ref-server.mjs"

_URL_RE = re.compile(r"listening on (http://[0-9A-Za-z.\-\[\]:]+)")


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` in seconds (Linux /proc), threads included.

    Raises OSError when the process (or /proc) is not there.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (Linux /proc), threads included."""
    return sum(cpu_times(pid))


class PeerStartError(RuntimeError):
    """A server did not print its listening line in time (output attached)."""


@dataclass
class ServerProc:
    """A running server subprocess and the base URL it listens on."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    output: list[str] = field(default_factory=list)

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM, wait up to ``grace`` s, then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=grace)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (crash simulation) and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def _drain(stream: object, lines: queue.Queue[str], keep: list[str]) -> None:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        text = raw.decode("utf-8", "replace").rstrip("\n")
        if len(keep) < 2000:  # bounded: only for error reports
            keep.append(text)
        lines.put(text)


def _spawn(
    name: str, cmd: list[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> ServerProc:
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    lines: queue.Queue[str] = queue.Queue()
    keep: list[str] = []
    for stream in (proc.stdout, proc.stderr):
        threading.Thread(target=_drain, args=(stream, lines, keep), daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
            time.sleep(0.05)  # let the drain threads collect the last lines
            raise PeerStartError(
                f"{name} did not start (exit={proc.returncode}): {cmd}\n" + "\n".join(keep[-40:])
            )
        try:
            line = lines.get(timeout=min(left, 0.2))
        except queue.Empty:
            continue
        match = _URL_RE.search(line)
        if match:
            return ServerProc(name=name, url=match.group(1).rstrip("/"), proc=proc, output=keep)


def durasync_command() -> list[str]:
    """How to run the ``durasync`` CLI of this checkout's virtualenv."""
    script = Path(sys.executable).with_name("durasync")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from durasync.cli import main; sys.exit(main())"]


def start_ours(
    *,
    data_dir: Path | None = None,
    long_poll_timeout: float = 0.5,
    extra: list[str] | None = None,
    timeout: float = 20.0,
) -> ServerProc:
    """``durasync serve --port 0`` with ``--memory`` or ``--data DIR``."""
    store = ["--data", str(data_dir)] if data_dir is not None else ["--memory"]
    cmd = [
        *durasync_command(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *store,
        "--long-poll-timeout",
        str(long_poll_timeout),
        *(extra or []),
    ]
    name = "durasync-" + ("data" if data_dir is not None else "memory")
    return _spawn(name, cmd, cwd=ROOT, timeout=timeout)


def node_available() -> bool:
    return shutil.which("node") is not None and (JS_DIR / "node_modules").is_dir()


def start_reference(
    *,
    data_dir: Path | None = None,
    long_poll_timeout: float = 0.5,
    webhooks: bool = False,
    compression: bool = True,
    timeout: float = 20.0,
) -> ServerProc:
    """The npm ``@durable-streams/server`` via ``tests/js/ref-server.mjs``."""
    cmd = [
        "node",
        str(REF_SERVER_SCRIPT),
        "--port",
        "0",
        "--long-poll-timeout-ms",
        str(int(long_poll_timeout * 1000)),
    ]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    if webhooks:
        cmd.append("--webhooks")
    if not compression:
        cmd.append("--no-compression")
    name = "reference-" + ("file" if data_dir is not None else "memory")
    return _spawn(name, cmd, cwd=JS_DIR, timeout=timeout)
