"""The Durable Streams conformance suite against a two-node cluster sharing one Redis.

All 338 tests (subscriptions included) must pass through tests/routeproxy.py, which sends
writes (PUT/POST/DELETE) to node A and reads (GET/HEAD/OPTIONS: catch-up, long-poll, SSE) to
node B. Every read of data written a moment ago, every live read woken by an append, and every
subscription read (§9) then crosses nodes through Redis. A run against one node alone adds
nothing this one does not cover (the same store code serves both nodes) and is not repeated.

Helpers (running vitest, checking its JSON report) come from tests/streams/test_conformance.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from routeproxy import RouteProxy
from streams.test_conformance import assert_suite_passed, run_suite

from .conftest import Cluster

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_conformance_writes_on_a_reads_on_b(cluster: Cluster, tmp_path: Path) -> None:
    with RouteProxy(cluster.a.url, cluster.b.url) as proxy:
        result = run_suite(proxy.url, tmp_path / "vitest.json")
        # The split really happened: both nodes served a large share of the suite.
        assert proxy.app.requests["write"] > 300, proxy.app.requests
        assert proxy.app.requests["read"] > 300, proxy.app.requests
    assert_suite_passed(result)
