"""The staff pages in a real browser (Debian's chromium driven by playwright) against a real
``archive serve``: signing in and out, finding a call by phone number, playing and seeking it,
reading a chat, role limits, and an axe-core accessibility scan of each page."""

import asyncio
import subprocess

from playwright.async_api import BrowserContext

from tests.helpers import ARCHIVE_EXE
from tests.pages.browser import NUMBER, TENANT, Site, serious_violations, shoot, sign_in


async def test_sign_in_find_a_call_by_number_play_and_seek(site: Site,
                                                          context: BrowserContext) -> None:
    page = await context.new_page()
    ranges: list[str] = []
    page.on("request", lambda r: ranges.append(r.headers.get("range", ""))
            if "/media" in r.url else None)
    await page.goto(site.base + "/search")
    assert "/signin" in page.url  # signed out: sent to sign in first
    assert await serious_violations(page) == []
    await shoot(page, "signin")
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
    await shoot(page, "search")
    await rows.first.locator("a").click()
    await page.wait_for_url(f"**/items/{site.call_id}")
    assert NUMBER in await page.locator("#details").inner_text()
    assert await serious_violations(page) == []
    await shoot(page, "item-call")

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
    await shoot(page, "item-chat")


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
    await asyncio.to_thread(
        subprocess.run, [ARCHIVE_EXE, "users", "create", "jo.bloggs", "--tenant", TENANT,
                         "--role", "complaints", "--password-stdin"],
        input="correct horse battery\n", env=site.env(), check=True, capture_output=True,
        text=True)
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
