"""Crash safety of the embedded store: SIGKILL a writer process at random moments.

Each round starts a subprocess that appends from 6 concurrent writers (own and
shared streams, 1-3 messages per batch), kills it with SIGKILL after a random
delay, reopens the store and checks that every acknowledged batch is present
exactly once, whole, in order, at the acknowledged offsets. Odd rounds use
idempotent producers that resume across kills by retrying their first
unacknowledged seq, which must be deduplicated if it had been committed.
bench/crash.py runs many more rounds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import random_seed

from .crash_writer import run_rounds


@pytest.mark.slow
def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    seed = random_seed()
    totals = run_rounds(tmp_path / "data", 6, seed=seed)
    assert totals["acks"] > 0, totals
    assert totals["messages_checked"] > 0, totals
