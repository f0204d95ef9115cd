"""Browser fixtures: one Chromium for the session, a fresh context (cookies, storage) per test."""
from __future__ import annotations

import pytest

from tests.conftest import require
from tests.support.browser import chromium_available, launch
from tests.support.google import google  # noqa: F401 - the Google stand-in, whose certificate is pinned too


@pytest.fixture(scope="package")
def browser(idp, google, ca):
    # One Chromium for all browser tests, stopped when pytest leaves tests/e2e: Playwright's sync API
    # keeps an asyncio loop registered as running in this thread while it is started, and tests elsewhere
    # (aiosmtplib in tests/outbox) need asyncio.run() in the main thread afterwards.
    require(chromium_available(), "Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = launch(playwright, [idp.url, google.url], ca.ca_path)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def context(browser):
    # Certificate errors stay fatal: only the identity providers' own certificates are pinned (tests/support/browser.py).
    ctx = browser.new_context(ignore_https_errors=False, viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    return context.new_page()
