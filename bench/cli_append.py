"""``seq 1 N | durasync append URL -``: this tree's CLI against an older revision's, in one run.

Starts one ``durasync serve`` (embedded store in a temporary directory, or ``--memory``) and
times, interleaved round by round, each on a fresh JSON stream:

- ``before``: the ``durasync append`` code of git revision ``--before`` (default: the last
  revision before stdin was read in chunks), loaded from ``git show REV:src/durasync/client/cli.py``
  into a temporary module and run against this tree's client library;
- ``after``: this tree's ``durasync append URL -``;
- ``httpx``: a plain writer as the floor: one process that reads stdin, validates each line as
  JSON and POSTs batches of 1,000 lines with httpx, without an idempotent producer.

Each is the shell pipeline ``seq 1 N | ...`` (wall time of the whole pipeline, interpreter start
included) and must leave exactly N messages in its stream. Prints the median seconds and the
ratio before/after. Usage::

    .venv/bin/python bench/cli_append.py                 # 100,000 lines, 5 rounds, embedded store
    .venv/bin/python bench/cli_append.py --lines 20000 --rounds 2 --memory
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import ROOT, start_ours

#: The revision before ``append`` read stdin in chunks (one line per hand-over).
DEFAULT_BEFORE = "e3e4314"

_OLD_RUNNER = """
import argparse, sys
sys.path.insert(0, sys.argv[1])
import old_cli
parser = argparse.ArgumentParser()
old_cli.add_append_command(parser.add_subparsers())
args = parser.parse_args(["append", sys.argv[2], "-"])
sys.exit(args.func(args))
"""

_HTTPX_WRITER = """
import sys, httpx, msgspec
url = sys.argv[1]
batch = []
with httpx.Client(timeout=30) as client:
    def send():
        body = b"[" + b",".join(batch) + b"]"
        headers = {"content-type": "application/json"}
        client.post(url, content=body, headers=headers).raise_for_status()
        batch.clear()
    for line in sys.stdin.buffer:
        value = line.strip()
        if value:
            msgspec.json.decode(value)
            batch.append(value)
        if len(batch) == 1000:
            send()
    if batch:
        send()
"""


def _count(url: str) -> int:
    """Messages in a JSON stream (catch-up reads until up to date)."""
    offset, total = "-1", 0
    while True:
        with urllib.request.urlopen(f"{url}?offset={offset}") as resp:
            total += len(json.loads(resp.read() or b"[]"))
            offset = resp.headers["Stream-Next-Offset"]
            if resp.headers.get("Stream-Up-To-Date") == "true":
                return total


def _create(url: str) -> None:
    req = urllib.request.Request(
        url, method="PUT", headers={"Content-Type": "application/json"}, data=b""
    )
    urllib.request.urlopen(req).close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git revision of 'before'")
    parser.add_argument("--memory", action="store_true", help="serve --memory")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="durasync-bench-append-"))
    old = subprocess.run(
        ["git", "show", f"{args.before}:src/durasync/client/cli.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    (tmp / "old_cli.py").write_bytes(old)
    py = sys.executable
    durasync = str(Path(py).parent / "durasync")
    commands = {
        "before": lambda u: [py, "-c", _OLD_RUNNER, str(tmp), u],
        "after": lambda u: [durasync, "append", u, "-"],
        "httpx": lambda u: [py, "-c", _HTTPX_WRITER, u],
    }
    server = start_ours(data_dir=None if args.memory else tmp / "data")
    times: dict[str, list[float]] = {k: [] for k in commands}
    try:
        for r in range(args.rounds):
            for name, command in commands.items():
                url = f"{server.url}/v1/stream/bench-append-{name}-{r}"
                _create(url)
                seq = subprocess.Popen(["seq", "1", str(args.lines)], stdout=subprocess.PIPE)
                started = time.perf_counter()
                done = subprocess.run(
                    command(url), stdin=seq.stdout, capture_output=True, timeout=600, check=False
                )
                elapsed = time.perf_counter() - started
                assert seq.stdout is not None
                seq.stdout.close()
                seq.wait()
                if done.returncode != 0:
                    raise SystemExit(f"{name} failed: {done.stderr.decode()}")
                got = _count(url)
                if got != args.lines:
                    raise SystemExit(f"{name}: {got} messages in the stream, not {args.lines}")
                times[name].append(elapsed)
                print(f"round {r + 1} {name:6} {elapsed:7.2f} s", flush=True)
    finally:
        server.stop()
    store = "memory" if args.memory else "embedded"
    print(f"\nseq 1 {args.lines} | ... -> {store} store, {args.rounds} rounds, median seconds")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in commands:
        print(f"  {name:6} {med[name]:7.2f} s  ({args.lines / med[name]:,.0f} lines/s)")
    print(f"  before/after: {med['before'] / med['after']:.1f}x")
    print(f"  after/httpx:  {med['after'] / med['httpx']:.2f}x")


if __name__ == "__main__":
    main()
