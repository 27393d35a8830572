"""Fixtures shared by every test directory: real headless Chromium (tests/browsers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio
from playwright.async_api import Browser, BrowserContext

from browsers import chromium


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the test module (its tests run on the module's loop)."""
    async with chromium() as b:
        yield b


@pytest_asyncio.fixture(loop_scope="module")
async def browser_contexts(
    browser: Browser,
) -> AsyncIterator[Callable[..., Awaitable[BrowserContext]]]:
    """``await browser_contexts(**options)``: a new context (one per simulated user; options as
    ``Browser.new_context``, default viewport 1280x800), every one closed after the test."""
    opened: list[BrowserContext] = []

    async def new(**options: Any) -> BrowserContext:
        ctx = await browser.new_context(**{"viewport": {"width": 1280, "height": 800}, **options})
        opened.append(ctx)
        return ctx

    try:
        yield new
    finally:
        for ctx in opened:
            await ctx.close()
