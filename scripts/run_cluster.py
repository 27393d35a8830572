"""Run a two-node durasync cluster on loopback for trying it (``make run-cluster``).

Starts, in the foreground:

- ``redis-server`` on 127.0.0.1 (AOF with ``appendfsync always``: an acknowledged append
  survives a Redis crash; data under ``<dir>/redis``);
- two ``durasync serve --redis`` nodes (default ports 4437 and 4438) sharing it.

Prints the URLs and waits. Ctrl-C (or SIGTERM) stops the nodes, then Redis, each by its
PID, SIGTERM first (SIGKILL only if one does not exit in time). The children run in their
own sessions so the terminal's Ctrl-C reaches only this script, which stops them in order.
If any child exits by itself, the others are stopped too. See docs/deploy.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _wait(check: object, proc: subprocess.Popen[bytes], what: str, limit: float = 20.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {limit:.0f}s")


def _stop(proc: subprocess.Popen[bytes], name: str) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        print(f"{name} (pid {proc.pid}) did not stop: SIGKILL", file=sys.stderr)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("durasync-cluster"), help="state dir")
    parser.add_argument("--ports", default="4437,4438", help="node ports, comma-separated")
    parser.add_argument("--redis-port", type=int, default=6390)
    parser.add_argument("--host", default="127.0.0.1", help="interface the nodes bind")
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",") if p]
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        print("redis-server not found: `make redis-deps` installs it", file=sys.stderr)
        return 1
    for port in [args.redis_port, *ports]:
        if _answers(port):
            print(f"port {port} is already in use", file=sys.stderr)
            return 1
    redis_dir = (args.dir / "redis").resolve()
    redis_dir.mkdir(parents=True, exist_ok=True)
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        redis = subprocess.Popen(
            [
                redis_bin,
                "--port",
                str(args.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(redis_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                "--logfile",
                str(redis_dir / "redis.log"),
            ],
            start_new_session=True,
        )
        started.append(("redis-server", redis))
        _wait(lambda: _redis_ready(args.redis_port), redis, "redis-server")
        redis_url = f"redis://127.0.0.1:{args.redis_port}/0"
        for port in ports:
            node = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "durasync",
                    "serve",
                    "--host",
                    args.host,
                    "--port",
                    str(port),
                    "--redis",
                    redis_url,
                ],
                start_new_session=True,
            )
            started.append((f"node :{port}", node))
            _wait(lambda port=port: _answers(port), node, f"node on port {port}")
        print(f"\nredis   {redis_url}  (AOF appendfsync always, data in {redis_dir})")
        for port in ports:
            print(f"node    http://{args.host}:{port}  (streams /v1/stream/..., rooms, /healthz)")
        print("Ctrl-C stops all of them.\n", flush=True)
        while not stopping:
            if any(proc.poll() is not None for _, proc in started):
                dead = [name for name, proc in started if proc.poll() is not None]
                print(f"{', '.join(dead)} exited: stopping the rest", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    except RuntimeError as exc:
        print(f"run-cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for name, proc in reversed(started):  # nodes first, Redis last
            _stop(proc, name)
        print("stopped", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
