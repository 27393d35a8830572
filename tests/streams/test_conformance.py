"""The published Durable Streams conformance suite against our server.

Runs ``@durable-streams/server-conformance-tests@0.3.6`` (pinned in
tests/js/package-lock.json) through vitest against ``durasync serve`` on the
memory store and on the embedded store, with a 0.5 s long-poll timeout (the
suite assumes a short one). Every one of the 338 tests must pass: the 6
opt-in subscription tests included, nothing skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from helpers import ServerProcess, start_server

JS_DIR = Path(__file__).resolve().parents[1] / "js"
EXPECTED_TESTS = 338

pytestmark = pytest.mark.slow


def run_suite(base_url: str, report: Path) -> dict[str, object]:
    """Run the suite against ``base_url``; the vitest JSON report (also used by tests/cluster)."""
    npx = shutil.which("npx")
    assert npx is not None, "node/npx is required for the conformance suite"
    assert (JS_DIR / "node_modules" / "@durable-streams" / "server-conformance-tests").is_dir(), (
        "npm peers missing: run `make npm-deps`"
    )
    proc = subprocess.run(
        [
            npx,
            "vitest",
            "run",
            "conformance.test.mjs",
            "--reporter=json",
            f"--outputFile={report}",
        ],
        cwd=JS_DIR,
        env={**os.environ, "DURASYNC_BASE_URL": base_url, "CI": "1"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert report.exists(), f"vitest wrote no report:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result: dict[str, object] = json.loads(report.read_text())
    return result


def _run_suite(server: ServerProcess, report: Path) -> dict[str, object]:
    return run_suite(server.url, report)


def _failures(result: dict[str, object]) -> list[str]:
    failed: list[str] = []
    suites = cast(list[dict[str, Any]], result.get("testResults", []))
    for suite in suites:
        for test in suite.get("assertionResults", []):
            if test.get("status") != "passed":
                messages = " | ".join(test.get("failureMessages", []))[:300]
                failed.append(f"{test.get('status')}: {test.get('fullName')}: {messages}")
    return failed


def assert_suite_passed(result: dict[str, object]) -> None:
    """Every one of the EXPECTED_TESTS passed; nothing failed, skipped or todo."""
    failures = _failures(result)
    assert not failures, "\n".join(failures[:40])
    assert result["numTotalTests"] == EXPECTED_TESTS
    assert result["numPassedTests"] == EXPECTED_TESTS
    assert result["numFailedTests"] == 0
    assert result["numPendingTests"] == 0
    assert result.get("numTodoTests", 0) == 0


@pytest.fixture(params=["memory", "embedded"])
def suite_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    store_args = ["--memory"] if request.param == "memory" else ["--data", str(tmp_path / "data")]
    server = start_server("--port", "0", *store_args, "--long-poll-timeout", "0.5")
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, "".join(server.output[-30:])


@pytest.mark.timeout(300)
def test_conformance_suite_passes_completely(suite_server: ServerProcess, tmp_path: Path) -> None:
    result = _run_suite(suite_server, tmp_path / "vitest.json")
    assert_suite_passed(result)
