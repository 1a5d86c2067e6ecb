"""The staff pages in a real browser (Debian's chromium driven by playwright) against a real
``archive serve``: signing in and out, finding a call by phone number, playing and seeking it,
reading a chat, role limits, and an axe-core accessibility scan of each page."""

import asyncio
import json
import os
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.helpers import ARCHIVE_EXE
from tests.ingest import media
from tests.servers import archive_serve, stop

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"
TENANT = "camden"
NUMBER = "+442079460000"
FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (apt-get install chromium)")


@dataclass
class Site:
    base: str
    tokens: dict[str, str]
    call_id: str
    chat_id: str
    data_dir: Path


def _token(data_dir: Path, role: str) -> str:
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(data_dir)}
    return subprocess.run([ARCHIVE_EXE, "tokens", "create", "--role", role, "--tenant", TENANT],
                          env=env, check=True, capture_output=True, text=True).stdout.strip()


def _push(base: str, token: str, method: str, path: str, body: bytes, *,
          headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(base + path, data=body, method=method, headers={
        "Authorization": f"Bearer {token}", **headers})
    with urllib.request.urlopen(request, timeout=30) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data_dir = tmp_path_factory.mktemp("pages") / "var"
    proc, base, ingest = archive_serve(data_dir, TENANT)
    try:
        call = _push(base, ingest, "PUT", "/v1/recordings/call-1?started_at=2026-11-20T10:00:00Z"
                     f"&caller_number={NUMBER.replace('+', '%2B')}&agent_id=a17"
                     "&service=council-tax", media.wav(8.0), headers={"Content-Type": "audio/wav"})
        chat = _push(base, ingest, "POST", "/v1/transcripts", json.dumps({
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
        tokens = {role: _token(data_dir, role) for role in ("complaints", "quality")}
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
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    yield ctx
    await ctx.close()


async def sign_in(page: Page, site: Site, role: str) -> None:
    await page.goto(site.base + "/signin")
    await page.fill("#token", site.tokens[role])
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url("**/search")


async def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical WCAG 2.x A/AA violations of the page."""
    await page.evaluate(AXE.read_text())
    result = await page.evaluate(
        "axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}})")
    return [f"{v['id']}: {v['help']} at {[n['html'][:120] for n in v['nodes']]}"
            for v in result["violations"] if v["impact"] in {"serious", "critical"}]


async def test_sign_in_find_a_call_by_number_play_and_seek(site: Site,
                                                          context: BrowserContext) -> None:
    page = await context.new_page()
    ranges: list[str] = []
    page.on("request", lambda r: ranges.append(r.headers.get("range", ""))
            if "/media" in r.url else None)
    await page.goto(site.base + "/search")
    assert "/signin" in page.url  # signed out: sent to sign in first
    assert await serious_violations(page) == []
    await page.fill("#token", site.tokens["complaints"])
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url("**/search")
    cookie = next(c for c in await context.cookies() if c["name"] == "archive_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    await page.fill("#f-caller_number", "020 7946 0000")  # national notation
    await page.click("button:has-text('Search')")
    rows = page.locator("#results tbody tr")
    assert await rows.count() == 1
    assert await serious_violations(page) == []
    await rows.first.locator("a").click()
    await page.wait_for_url(f"**/items/{site.call_id}")
    assert NUMBER in await page.locator("#details").inner_text()
    assert await serious_violations(page) == []

    player = page.locator("#player")
    await player.evaluate("a => new Promise(ok => a.readyState >= 1 ? ok() : "
                          "a.addEventListener('loadedmetadata', ok, {once: true}))")
    duration = await player.evaluate("a => a.duration")
    assert 7.5 < duration < 8.5
    moved = await player.evaluate(
        "a => new Promise(ok => { a.addEventListener('seeked', () => ok(a.currentTime), "
        "{once: true}); a.currentTime = 5; })")
    assert abs(moved - 5) < 0.5
    await player.evaluate("a => a.play().then(() => new Promise(ok => setTimeout(ok, 300)))")
    assert await player.evaluate("a => a.currentTime") >= 5
    assert any(r.startswith("bytes=") for r in ranges)  # the browser asked for byte ranges


async def test_a_chat_reads_as_a_conversation(site: Site, context: BrowserContext) -> None:
    page = await context.new_page()
    await sign_in(page, site, "complaints")
    await page.goto(f"{site.base}/items/{site.chat_id}")
    messages = page.locator("#conversation li")
    assert await messages.count() == 2
    first = await messages.nth(0).inner_text()
    assert "Ann" in first and "customer" in first and "My bin was not collected." in first
    assert "Sam" in await messages.nth(1).inner_text()
    assert "Ann Smith" in await page.locator("#details").inner_text()
    assert await serious_violations(page) == []


async def test_a_quality_monitor_sees_no_people_filters_nor_chats(
    site: Site, context: BrowserContext
) -> None:
    page = await context.new_page()
    await sign_in(page, site, "quality")
    assert await page.locator("#f-caller_number").count() == 0
    assert await page.locator("#f-name").count() == 0
    # Typing the filter into the address bar does not get round it.
    await page.goto(site.base + "/search?search=1&caller_number=02079460000")
    assert "caller_number: may not be used by a quality monitor" in await page.locator(
        ".govuk-error-summary").inner_text()
    answer = await page.goto(f"{site.base}/items/{site.chat_id}")
    assert answer is not None and answer.status == 403


async def test_sign_out_ends_the_session(site: Site, context: BrowserContext) -> None:
    page = await context.new_page()
    await sign_in(page, site, "complaints")
    await page.click("button:has-text('Sign out')")
    await page.wait_for_url("**/signin")
    await page.goto(site.base + "/search")
    assert "/signin" in page.url
    media_answer = await page.request.get(f"{site.base}/v1/items/{site.call_id}/media")
    assert media_answer.status == 401


async def test_a_wrong_token_is_refused_with_a_clear_message(
    site: Site, context: BrowserContext
) -> None:
    page = await context.new_page()
    await page.goto(site.base + "/signin")
    await page.fill("#token", "arc_not-a-real-token")
    await page.click("button:has-text('Sign in')")
    summary = page.locator(".govuk-error-summary")
    assert "token is not right" in await summary.inner_text()
    assert await serious_violations(page) == []


async def test_a_user_signs_in_with_a_password(site: Site, context: BrowserContext) -> None:
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(site.data_dir)}
    await asyncio.to_thread(
        subprocess.run, [ARCHIVE_EXE, "users", "create", "jo.bloggs", "--tenant", TENANT,
                         "--role", "complaints", "--password-stdin"],
        input="correct horse battery\n", env=env, check=True, capture_output=True, text=True)
    page = await context.new_page()
    await page.goto(site.base + "/signin")
    await page.fill("#username", "jo.bloggs")
    await page.fill("#password", "wrong password here")
    await page.click("button:has-text('Sign in')")
    assert "username or password is not right" in await page.locator(
        ".govuk-error-summary").inner_text()
    await page.fill("#username", "jo.bloggs")
    await page.fill("#password", "correct horse battery")
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url("**/search")
    assert "Complaints" in await page.locator("nav").inner_text()
