"""The lifecycle page (administrators) and the audit page (auditors) in a real browser: change the
call retention window through its preview and confirmation, see the 12-week chart count the
items that will be destroyed and the one a legal hold keeps; read the audit log of the site's
earlier actions, filter it, see the chain verified; bad input and role limits. A window fixed by
the settings file is checked over plain HTTP (it needs a server with such a setting)."""

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from playwright.async_api import BrowserContext, Page
from pytest_aiohttp import AiohttpClient

from archive.clock import ManualClock
from archive.models import Role
from archive.settings import Settings
from tests.conftest import START
from tests.helpers import make_token
from tests.ingest import media
from tests.pages.browser import Site, serious_violations, shoot, sign_in
from web.app import create_app
from web.keys import DATABASE

CALL_1_END = datetime(2026, 11, 20, 10, 0, 8, tzinfo=UTC)  # the site's call (8 s)
CALL_2_START = CALL_1_END - timedelta(days=5, seconds=8)  # another call, ended 5 days earlier


def _short_window() -> int:
    """Days that put the site's call 9-10 days from its end of window (week 2 of the chart)
    and the other call 4-5 days from it (week 1), whatever day the tests run."""
    return (datetime.now(UTC) - CALL_1_END).days + 10


async def _sign_in_elsewhere(page: Page, site: Site, role: str) -> None:
    """Sign in a role that may not search (its landing page is not this module's concern)."""
    await page.goto(site.base + "/signin")
    await page.fill("#token", site.tokens[role])
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url(lambda url: "/signin" not in url)
    await page.goto(site.base + "/account")  # where the menu is


async def _figures(page: Page) -> list[list[str]]:
    """The chart's data table: one [label, destroyed, kept by holds] row a week."""
    rows = page.locator("#forecast table tbody tr")
    return [[c.strip() for c in await rows.nth(n).locator("th, td").all_inner_texts()]
            for n in range(await rows.count())]


async def test_admin_changes_a_window_and_sees_the_12_week_chart(
    site: Site, context: BrowserContext
) -> None:
    site.push("PUT", "/v1/recordings/call-2?started_at="
              f"{CALL_2_START.isoformat().replace('+00:00', 'Z')}&agent_id=a18",
              media.wav(3.0), headers={"Content-Type": "audio/wav"})
    page = await context.new_page()
    await sign_in(page, site, "admin")
    await page.click("nav a:has-text('Lifecycle')")
    await page.wait_for_url("**/lifecycle")
    assert await page.locator("#policy-call td").first.inner_text() == "365"
    assert await page.locator("#total-destroy").inner_text() == "0"
    assert len(await _figures(page)) == 12
    assert await serious_violations(page) == []

    # Bad days: a 400 page naming the field, and nothing changes.
    for typed, says in (("ten", "must be a whole number"), ("0", "from 1 to")):
        await page.fill("#days-call", typed)
        async with page.expect_response(lambda r: r.url.endswith("/lifecycle/preview")) as info:
            await page.click("button:has-text('Preview the change for calls')")
        assert (await info.value).status == 400
        summary = await page.locator(".govuk-error-summary").inner_text()
        assert "Days:" in summary and says in summary
        assert await page.locator("#days-call-error").count() == 1
        assert await page.locator("#days-call").input_value() == typed
        assert await page.locator("#policy-call td").first.inner_text() == "365"
        assert await serious_violations(page) == []

    days = _short_window()
    await page.fill("#days-call", str(days))
    await page.fill("#reason-call", "Shorter window agreed by the records board")
    await page.click("button:has-text('Preview the change for calls')")
    assert await page.locator("h1").inner_text() == "Check the change for calls"
    assert await page.locator("#plan-recomputed").inner_text() == "2"
    assert (await page.locator("#plan-expire").inner_text()).startswith("0:")
    assert await serious_violations(page) == []
    await shoot(page, "lifecycle-preview")
    await page.click("button:has-text('Confirm')")
    await page.wait_for_url("**/lifecycle?changed=call*")
    assert f"is now {days} days (version 1)" in await page.locator("#changed").inner_text()
    assert "2 item(s) were recomputed" in await page.locator("#changed").inner_text()
    assert await page.locator("#policy-call td").first.inner_text() == str(days)
    figures = await _figures(page)
    assert figures[0][1:] == ["1", "0"] and figures[1][1:] == ["1", "0"]
    assert all(row[1:] == ["0", "0"] for row in figures[2:])
    assert re.fullmatch(r"w/c \d{1,2} [A-Z][a-z]{2}", figures[0][0])

    # A legal hold on the site's call: week 2's item is now kept by holds, not destroyed.
    site.push("POST", "/v1/holds", json.dumps({
        "case_ref": "CMP-LIFE-1", "reason": "complaint", "item_ids": [site.call_id]}).encode(),
        headers={"Content-Type": "application/json"}, role="complaints")
    await page.goto(site.base + "/lifecycle")
    figures = await _figures(page)
    assert figures[0][1:] == ["1", "0"] and figures[1][1:] == ["0", "1"]
    assert await page.locator("#total-destroy").inner_text() == "1"
    assert await page.locator("#total-kept").inner_text() == "1"
    bars = page.locator("#forecast rect.app-chart__bar")
    assert await bars.count() == 2
    assert await page.locator("#forecast rect[data-series='kept by holds']").count() == 1
    assert await serious_violations(page) == []
    await shoot(page, "lifecycle")

    # A preview overtaken by another change is refused when confirmed: nothing happens.
    await page.fill("#days-call", str(days + 1))
    await page.click("button:has-text('Preview the change for calls')")
    other = await context.new_page()
    await other.goto(site.base + "/lifecycle")
    await other.fill("#days-call", str(days + 2))
    await other.click("button:has-text('Preview the change for calls')")
    await other.click("button:has-text('Confirm')")
    await other.wait_for_url("**/lifecycle?changed=call*")
    async with page.expect_response(lambda r: r.url.endswith("/lifecycle/policies")) as info:
        await page.click("button:has-text('Confirm')")
    assert (await info.value).status == 409
    assert "preview again" in await page.locator(".govuk-error-summary").inner_text()
    assert await page.locator("#policy-call td").first.inner_text() == str(days + 2)
    assert await serious_violations(page) == []


async def test_auditor_reads_filters_and_sees_the_chain_verified(
    site: Site, context: BrowserContext
) -> None:
    page = await context.new_page()
    await sign_in(page, site, "complaints")  # a search and a view for the log to show
    await page.goto(f"{site.base}/items/{site.chat_id}")
    await page.click("button:has-text('Sign out')")
    await page.wait_for_url("**/signin")

    await _sign_in_elsewhere(page, site, "auditor")
    assert await page.locator("nav a:has-text('Search')").count() == 0
    await page.click("nav a:has-text('Audit')")
    await page.wait_for_url("**/audit")
    chain = await page.locator("#chain-text").inner_text()
    assert re.fullmatch(r"Chain intact: \d+ events checked\.", chain)
    actions = await page.locator("#events tbody tr td:nth-child(3)").all_inner_texts()
    assert {"item.ingest", "item.view"} <= set(actions)
    assert await serious_violations(page) == []
    await shoot(page, "audit")

    await page.fill("#f-action", "item.")
    await page.click("button:has-text('Show events')")
    await page.wait_for_url("**/audit?*action=item.*")
    actions = await page.locator("#events tbody tr td:nth-child(3)").all_inner_texts()
    assert actions and all(a.startswith("item.") for a in actions)
    # An auditor may not open items: their ids are text, not links.
    assert await page.locator("#events a").count() == 0
    assert site.chat_id in await page.locator("#events").inner_text()
    text = await page.locator("#events").inner_text()
    for personal in ("Ann", "ann@example.org", "SW1A", "2079460000", "7946 0000"):
        assert personal not in text

    async with page.expect_response(lambda r: "/audit?" in r.url) as info:
        await page.goto(f"{site.base}/audit?item_id=nope&from=yesterday")
    assert (await info.value).status == 400
    summary = await page.locator(".govuk-error-summary").inner_text()
    assert "item_id:" in summary and "from:" in summary
    assert await page.locator("#events").count() == 0
    assert await serious_violations(page) == []

    # Paging: one event a page, the next page holds the next older one.
    await page.goto(f"{site.base}/audit?action=item.ingest&limit=1")
    first = await page.locator("#events tbody td:nth-child(1)").inner_text()
    await page.click("a:has-text('Next page')")
    second = await page.locator("#events tbody td:nth-child(1)").inner_text()
    assert datetime.strptime(second, "%d %b %Y %H:%M:%S") <= datetime.strptime(  # noqa: DTZ007
        first, "%d %b %Y %H:%M:%S")
    assert await page.locator("#f-action").input_value() == "item.ingest"


async def test_admin_sees_item_links_in_the_audit_log(site: Site,
                                                     context: BrowserContext) -> None:
    page = await context.new_page()
    await sign_in(page, site, "admin")
    await page.goto(f"{site.base}/audit?item_id={site.call_id}")
    await page.locator(f"#events a[href='/items/{site.call_id}']").first.click()
    await page.wait_for_url(f"**/items/{site.call_id}")


@pytest.mark.parametrize("role", ["complaints", "quality", "privacy"])
async def test_other_roles_get_no_menu_entry_and_403(site: Site, context: BrowserContext,
                                                     role: str) -> None:
    page = await context.new_page()
    await _sign_in_elsewhere(page, site, role)
    nav = page.locator("nav")
    assert await nav.locator("a:has-text('Lifecycle')").count() == 0
    assert await nav.locator("a:has-text('Audit')").count() == 0
    for path in ("/lifecycle", "/audit"):
        answer = await page.goto(site.base + path)
        assert answer is not None and answer.status == 403, path


async def test_auditor_may_not_use_the_lifecycle_page(site: Site,
                                                      context: BrowserContext) -> None:
    page = await context.new_page()
    await _sign_in_elsewhere(page, site, "auditor")
    assert await page.locator("nav a:has-text('Lifecycle')").count() == 0
    answer = await page.goto(site.base + "/lifecycle")
    assert answer is not None and answer.status == 403


# -- a window the settings file fixes (plain HTTP, its own app) ----------------------------------

Client = TestClient[web.Request, web.Application]


async def _signed_in(aiohttp_client: AiohttpClient, settings: Settings) -> tuple[Client, str]:
    """A client of an app whose settings fix the call window, signed in as an admin; the CSRF
    token of its session."""
    client = await aiohttp_client(create_app(settings, clock=ManualClock(START)))
    secret = await make_token(client.app[DATABASE], "camden", Role.ADMIN, START)
    form = await (await client.get("/signin")).text()
    token = re.search(r'name="signin_token" value="([^"]+)"', form)
    assert token is not None
    r = await client.post("/signin", data={"signin_token": token[1], "token": secret,
                                           "next": "/lifecycle"})
    assert r.status == 200 and r.url.path == "/lifecycle"
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', await r.text())
    assert csrf is not None
    return client, csrf[1]


async def test_a_window_fixed_by_the_settings_file_is_refused(
    aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "var", database_url=db_url,
                        segment_size=4096, retention_days="call=400")
    client, csrf = await _signed_in(aiohttp_client, settings)
    page = await (await client.get("/lifecycle")).text()
    assert 'id="fixed-call"' in page and 'id="change-call"' not in page
    assert 'id="change-chat"' in page
    r = await client.post("/lifecycle/preview", data={"csrf_token": csrf, "channel": "call",
                                                      "days": "30"})
    assert r.status == 409
    assert "fixed by the settings file" in await r.text()
    r = await client.post("/lifecycle/policies", data={"csrf_token": csrf, "channel": "call",
                                                       "days": "30", "confirm": "x"})
    assert r.status == 409
    r = await client.post("/lifecycle/preview", data={"channel": "chat", "days": "30"})
    assert r.status == 403  # no form token
