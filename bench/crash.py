"""Crash-safety soak: many SIGKILL rounds, store-level and end to end.

    .venv/bin/python bench/crash.py [--store-rounds 100] [--http-rounds 40] [--seed N]

Store level (tests/store/crash_writer.py): a subprocess appends to an
EmbeddedStore from 6 writers and is killed with SIGKILL at a random moment;
the store is reopened and checked after every round. End to end
(tests/streams/crash_http.py): ``durasync serve`` is killed while HTTP writers
POST, restarted, and everything is read back over HTTP. Both alternate plain
writers and idempotent producers that resume across kills. Exits non-zero on
the first violation. The test suite runs the same harnesses with few rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "store"), str(ROOT / "tests")]

import crash_writer  # noqa: E402

from streams import crash_http  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--store-rounds", type=int, default=100)
    parser.add_argument("--http-rounds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    args = parser.parse_args()
    print(f"seed {args.seed}")
    print(f"{'harness':<8} {'rounds':>6} {'acks':>8} {'checked':>8} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.store_rounds:
            t = time.perf_counter()
            store = crash_writer.run_rounds(Path(tmp) / "store", args.store_rounds, seed=args.seed)
            elapsed = time.perf_counter() - t
            print(
                f"{'store':<8} {store['rounds']:>6} {store['acks']:>8}"
                f" {store['messages_checked']:>8} {elapsed:>8.1f}",
                flush=True,
            )
        if args.http_rounds:
            t = time.perf_counter()
            http = asyncio.run(
                crash_http.run_rounds(Path(tmp) / "http", args.http_rounds, seed=args.seed)
            )
            elapsed = time.perf_counter() - t
            print(
                f"{'http':<8} {http['rounds']:>6} {http['acks']:>8}"
                f" {http['batches_checked']:>8} {elapsed:>8.1f}",
                flush=True,
            )
    print("no acknowledged write lost, duplicated, split or reordered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
