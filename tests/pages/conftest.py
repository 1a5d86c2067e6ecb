"""Fixtures of the browser tests. Each test module gets its own server (``site`` is
module-scoped), so one module's holds, samples or purges never change another's pages."""

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright

from tests.ingest import media
from tests.pages.browser import CHROMIUM, FLAGS, NUMBER, ROLES, TENANT, Site, make_token, push
from tests.servers import archive_serve, stop


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if Path(CHROMIUM).exists() or os.environ.get("CI") == "true":
        return
    skip = pytest.mark.skip(reason="Debian's chromium is not installed (apt-get install chromium)")
    for item in items:
        if "tests/pages/" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data_dir = tmp_path_factory.mktemp("pages") / "var"
    proc, base, ingest = archive_serve(data_dir, TENANT)
    try:
        call = push(base, ingest, "PUT", "/v1/recordings/call-1?started_at=2026-11-20T10:00:00Z"
                    f"&caller_number={NUMBER.replace('+', '%2B')}&agent_id=a17"
                    "&service=council-tax", media.wav(8.0), headers={"Content-Type": "audio/wav"})
        chat = push(base, ingest, "POST", "/v1/transcripts", json.dumps({
            "external_id": "chat-1", "started_at": "2026-11-21T11:00:00Z",
            "customer": {"name": "Ann Smith", "email": "ann@example.org",
                         "postcode": "SW1A 1AA"},
            "agent_id": "a17", "service": "housing",
            "messages": [
                {"at": "2026-11-21T11:00:05Z", "from": "customer", "name": "Ann",
                 "text": "My bin was not collected."},
                {"at": "2026-11-21T11:01:00Z", "from": "agent", "name": "Sam",
                 "text": "Sorry about that, I have booked a collection."}]}).encode(),
            headers={"Content-Type": "application/json"})
        tokens = {role: make_token(data_dir, role) for role in ROLES if role != "ingest"}
        tokens["ingest"] = ingest
        yield Site(base, tokens, call["id"], chat["id"], data_dir)
    finally:
        stop(proc)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                            args=FLAGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    # bypass_csp: only so that the test can inject axe-core; the pages' own policy stays on.
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True,
                                    accept_downloads=True)
    yield ctx
    await ctx.close()
