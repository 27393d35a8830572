"""Real headless Chromium for any test directory (the browser client, the demo, the inspector):
Debian's chromium driven by Playwright's async API with ``executable_path`` -- never
``playwright install``; ``make chromium-deps`` (part of ``make test``) installs it when missing.

The fixtures built on this live in tests/conftest.py: ``browser`` (one per test module) and
``browser_contexts`` (new contexts, all closed after the test, also when it fails). Test modules
that use them run on the module's event loop:
``pytestmark = pytest.mark.asyncio(loop_scope="module")``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from playwright.async_api import Browser, Page, async_playwright

#: The chromium binary; ``DURASYNC_CHROMIUM`` overrides it (as it does for bench/browser.py).
CHROMIUM = os.environ.get("DURASYNC_CHROMIUM", "/usr/bin/chromium")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Launch chromium headless; closed on exit.

    Raises AssertionError with the fix when the binary is missing.
    """
    found = os.access(CHROMIUM, os.X_OK)
    assert found, f"{CHROMIUM} is missing: `make chromium-deps` installs it"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


def watch_errors(page: Page) -> list[str]:
    """Collect the page's uncaught exceptions and console errors from now on (also stored as
    ``page.errors``); a test asserts the list is empty to say "no console errors"."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors  # type: ignore[attr-defined]
    return errors
