"""Crash safety end to end: SIGKILL ``durasync serve`` while HTTP writers append.

Rounds alternate plain writers and idempotent producers (Producer-* headers);
after every kill the server restarts on the same ``--data`` directory. The
final check reads everything back over HTTP: every acknowledged POST is
present exactly once, whole, in order (see crash_http.py). bench/crash.py runs
many more rounds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import random_seed

from .crash_http import run_rounds


@pytest.mark.slow
async def test_acknowledged_posts_survive_server_sigkill(tmp_path: Path) -> None:
    seed = random_seed()
    totals = await run_rounds(tmp_path / "data", 4, seed=seed)
    assert totals["acks"] > 0, (seed, totals)
    assert totals["batches_checked"] == totals["acks"], (seed, totals)
