"""The full chaos run: 50 stream tailers and 50 room clients through the fault
proxy while writers append and edit, with one SIGKILL + restart of the server mid-run.

    python bench/chaos.py [--tailers 50] [--rooms 50] [--writers 5] [--rounds 100]

Same scenario as ``tests/client/test_chaos.py`` (:func:`run_chaos`), at full scale; it raises
on any lost, duplicated or reordered message or a diverging room replica. Not part of the
test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from tests.client.test_chaos import run_chaos  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tailers", type=int, default=50)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--writers", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = asyncio.run(
            run_chaos(
                Path(tmp) / "data",
                tailers=args.tailers,
                rooms=args.rooms,
                writers=args.writers,
                rounds=args.rounds,
                seed=args.seed,
                limit=600.0,
            )
        )
        took = time.perf_counter() - t0
    print(
        f"chaos ok: {report.tailers} tailers each received all {report.messages} messages "
        f"exactly once in order; {report.rooms} room replicas equal the server's graph; "
        f"proxy cuts {report.cuts}, refusals {report.refused}; 1 SIGKILL + restart; {took:.1f} s"
    )


if __name__ == "__main__":
    main()
