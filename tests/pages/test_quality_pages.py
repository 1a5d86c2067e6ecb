"""The quality pages in a real browser: draw a sample, review a call with the form beside the
player, edit the review, bad scores refused, the summary per agent with its chart, and the
roles that may not use them. Every page is scanned with axe-core.

The first test runs before any evaluation form exists; the ``forms`` fixture then writes one
(as the API's admin would) and pushes more calls for two agents."""

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page

from tests.ingest import media
from tests.pages.browser import NUMBER, Site, serious_violations, shoot, sign_in

JSON = {"Content-Type": "application/json"}
FORM_NAME = "Council tax calls"
FORM: dict[str, Any] = {"name": FORM_NAME, "criteria": [
    {"key": "greeting", "label": "Greets and identifies", "weight": 1, "max_score": 5},
    {"key": "resolution", "label": "Resolves the query", "weight": 3, "max_score": 10}]}
OTHER_FORM: dict[str, Any] = {"name": "Complaint calls", "criteria": [
    {"key": "empathy", "label": "Shows empathy", "weight": 1, "max_score": 3}]}
NATIONAL = "020 7946 0000"  # the callers' number as a person would write it


@dataclass
class Calls:
    a17: list[str]  # agent a17 on 20 Nov 2026 (the site's call first)
    a22: list[str]  # agent a22 on 20 Nov 2026
    a30: list[str]  # agent a30 in October 2026 (for the summary only)
    a31: list[str]  # agent a31 in October 2026


def _get(site: Site, path: str, role: str = "quality") -> dict[str, Any]:
    request = urllib.request.Request(site.base + path,
                                     headers={"Authorization": f"Bearer {site.tokens[role]}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


def _call(site: Site, external_id: str, started: str, agent: str, seconds: float) -> str:
    number = NUMBER.replace("+", "%2B")
    answer = site.push("PUT", f"/v1/recordings/{external_id}?started_at={started}"
                              f"&agent_id={agent}&service=council-tax&caller_number={number}",
                       media.wav(seconds), headers={"Content-Type": "audio/wav"})
    return str(answer["id"])


def _review(site: Site, item_id: str, role: str, scores: dict[str, float]) -> None:
    site.push("POST", f"/v1/items/{item_id}/reviews", json.dumps(
        {"form": FORM_NAME, "scores": scores}).encode(), headers=JSON, role=role)


@pytest.fixture(scope="module")
def calls(site: Site) -> Calls:
    site.push("POST", "/v1/forms", json.dumps(FORM).encode(), headers=JSON, role="admin")
    site.push("POST", "/v1/forms", json.dumps(OTHER_FORM).encode(), headers=JSON, role="admin")
    return Calls(
        a17=[site.call_id, _call(site, "q-2", "2026-11-20T11:00:00Z", "a17", 2.0)],
        a22=[_call(site, "q-3", "2026-11-20T12:00:00Z", "a22", 2.0),
             _call(site, "q-4", "2026-11-20T13:00:00Z", "a22", 3.0)],
        a30=[_call(site, "q-5", "2026-10-05T09:00:00Z", "a30", 2.0),
             _call(site, "q-6", "2026-10-06T09:00:00Z", "a30", 2.0)],
        a31=[_call(site, "q-7", "2026-10-07T09:00:00Z", "a31", 2.0)])


def _reviews(site: Site, item_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = _get(site, f"/v1/items/{item_id}/reviews")["reviews"]
    return found


async def _no_customer_details(page: Page) -> None:
    text = await page.locator("main").inner_text()
    html = await page.content()
    assert NATIONAL not in text and NUMBER[3:] not in html  # in no notation


async def test_without_a_form_the_review_page_says_an_admin_must_create_one(
    site: Site, browser: Browser, context: BrowserContext
) -> None:
    page = await context.new_page()
    await sign_in(page, site, "admin")
    await page.goto(f"{site.base}/quality/review/{site.call_id}")
    advice = page.locator("#no-form")
    assert "POST /v1/forms" in await advice.inner_text()
    assert await advice.locator("a[href='/openapi.json']").count() == 1  # admins: the docs
    assert await page.locator("#review-form").count() == 0
    assert await page.locator("#player").is_visible()
    assert await serious_violations(page) == []

    monitor = await browser.new_context(viewport={"width": 1280, "height": 800},
                                        bypass_csp=True)
    page = await monitor.new_page()
    await sign_in(page, site, "quality")
    await page.goto(f"{site.base}/quality/review/{site.call_id}")
    advice = page.locator("#no-form")
    assert "an administrator must create one" in (await advice.inner_text()).lower()
    assert await advice.locator("a").count() == 0
    await monitor.close()


async def test_draw_a_sample_review_a_call_beside_the_player_and_edit_it(
    site: Site, calls: Calls, context: BrowserContext
) -> None:
    page = await context.new_page()
    await sign_in(page, site, "quality")
    assert await page.locator("nav a[href='/quality']").count() == 1
    await page.goto(site.base + "/quality")
    assert await serious_violations(page) == []

    await page.fill("#f-from", "2026-11-20")
    await page.fill("#f-to", "2026-11-21")
    await page.fill("#f-count", "1")
    await page.check("#f-count_by")  # per agent
    await page.fill("#f-seed", "browser-test")
    await page.click("button:has-text('Draw a sample')")
    await page.wait_for_url("**/quality/samples/*")
    sample_id = page.url.rsplit("/", 1)[1]
    rows = page.locator("#calls tbody tr")
    assert await rows.count() == 2  # one call of each agent
    agents = [await rows.nth(n).locator("td").nth(1).inner_text() for n in range(2)]
    assert agents == ["a17", "a22"]
    assert "Reviewed 0 of 2" in await page.locator("#progress").inner_text()
    await _no_customer_details(page)
    assert await serious_violations(page) == []
    await shoot(page, "quality-sample")
    row = rows.nth(0)
    item_id = await row.get_attribute("data-item")
    assert item_id in calls.a17
    assert "Not reviewed" in await row.inner_text()

    await row.locator("a:has-text('Review')").click()
    await page.wait_for_url(f"**/quality/review/{item_id}?sample={sample_id}")
    assert await page.locator("#f-form option").count() == 2  # two forms: a select
    assert "Shows empathy" in await page.locator("#review-form").inner_text()  # first by name
    await page.select_option("#f-form", FORM_NAME)
    await page.click("button:has-text('Use this form')")
    await page.wait_for_url("**form=Council*")
    player, form = page.locator("#player"), page.locator("#review-form")
    assert await player.is_visible() and await form.is_visible()
    p, f = await player.bounding_box(), await form.bounding_box()
    first = await page.locator("#f-score-greeting").bounding_box()
    assert p is not None and f is not None and first is not None
    assert p["x"] + p["width"] <= f["x"]  # side by side: the player left of the form
    # ...on one screen: the player and the first score are both in the 1280x800 window.
    assert p["y"] + p["height"] <= 800 and first["y"] + first["height"] <= 800
    left = await page.locator("#call").bounding_box()
    right = await page.locator("#evaluation").bounding_box()
    assert left is not None and right is not None and left["y"] == right["y"]
    assert "Greets and identifies" in await form.inner_text()
    await _no_customer_details(page)
    assert await serious_violations(page) == []
    await shoot(page, "quality-review")

    await page.fill("#f-score-greeting", "4")
    await page.fill("#f-score-resolution", "7")
    await page.fill("#f-notes", "Did not offer the single person discount")
    await page.check("#f-training_need")
    await page.click("button:has-text('Save review')")
    await page.wait_for_url(f"**/quality/samples/{sample_id}?saved=*")
    banner = page.locator(".govuk-notification-banner--success")
    assert "is saved" in await banner.inner_text()
    row = page.locator(f"#calls tr[data-item='{item_id}']")
    assert "Reviewed" in await row.locator(".app-quality-status").inner_text()
    assert "Not reviewed" not in await row.inner_text()
    assert "Reviewed 1 of 2" in await page.locator("#progress").inner_text()
    [saved] = _reviews(site, item_id)  # 100 * (4/5 + 3 * 7/10) / 4 = 72.5
    assert (saved["score"], saved["version"], saved["training_need"]) == (72.5, 1, True)

    await row.locator("a:has-text('Edit review')").click()
    await page.wait_for_url(f"**/quality/review/{item_id}?sample={sample_id}")
    assert await page.input_value("#f-score-greeting") == "4"
    assert await page.input_value("#f-score-resolution") == "7"
    assert await page.input_value("#f-notes") == "Did not offer the single person discount"
    assert await page.is_checked("#f-training_need")
    assert "earlier version is kept" in await page.locator("#previous").inner_text()
    await page.fill("#f-score-resolution", "9")
    await page.uncheck("#f-training_need")
    await page.click("button:has-text('Save changes')")
    await page.wait_for_url(f"**/quality/samples/{sample_id}?saved=*")
    assert "earlier version is kept" in await page.locator(
        ".govuk-notification-banner--success").inner_text()
    [edited] = _reviews(site, item_id)  # 100 * (4/5 + 3 * 9/10) / 4 = 87.5
    assert (edited["score"], edited["version"], edited["training_need"]) == (87.5, 2, False)
    history = _get(site, f"/v1/items/{item_id}/reviews/mine/history")["versions"]
    assert [v["score"] for v in history] == [72.5, 87.5]

    def events(action: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = _get(site, f"/v1/audit/events?action={action}",
                                           role="auditor")["events"]
        return found

    # The same audit events as the API's.
    assert any(e["detail"]["sample_id"] == sample_id for e in events("sample.draw"))
    for action in ("review.create", "review.edit"):
        assert [e["role"] for e in events(action) if e["item_id"] == item_id] == ["quality"]

    await page.goto(site.base + "/quality")
    newest = page.locator("#samples tbody tr").first
    assert "reviewed 1 of 2" in await newest.inner_text()
    assert await serious_violations(page) == []
    await shoot(page, "quality")


async def test_a_bad_score_is_named_and_nothing_is_saved(
    site: Site, calls: Calls, context: BrowserContext
) -> None:
    page = await context.new_page()
    await sign_in(page, site, "quality")
    item_id = calls.a22[1]
    await page.goto(f"{site.base}/quality/review/{item_id}?form=Council+tax+calls")
    await page.fill("#f-score-greeting", "7")  # out of 5
    await page.fill("#f-score-resolution", "")  # missing
    async with page.expect_response(lambda r: r.request.method == "POST") as info:
        await page.click("button:has-text('Save review')")
    assert (await info.value).status == 400
    summary = page.locator(".govuk-error-summary")
    text = await summary.inner_text()
    assert "Greets and identifies: must be a number from 0 to 5" in text
    assert "Resolves the query: is required" in text
    assert await summary.locator("a[href='#f-score-greeting']").count() == 1
    assert await page.input_value("#f-score-greeting") == "7"  # what was typed stays
    assert await page.locator("#f-score-greeting").get_attribute("aria-describedby") is not None
    assert (await page.title()).startswith("Error:")
    assert await serious_violations(page) == []
    assert _reviews(site, item_id) == []

    # Not a number at all: named the same way, still nothing saved.
    await page.fill("#f-score-greeting", "four")
    await page.fill("#f-score-resolution", "5")
    await page.click("button:has-text('Save review')")
    assert "Greets and identifies: must be a number" in await page.locator(
        ".govuk-error-summary").inner_text()
    assert _reviews(site, item_id) == []

    # Put right, it saves; opened outside a sample, the page goes back to the samples list.
    await page.fill("#f-score-greeting", "5")
    await page.click("button:has-text('Save review')")
    await page.wait_for_url("**/quality?saved=*")
    assert "is saved" in await page.locator(".govuk-notification-banner--success").inner_text()
    assert [r["score"] for r in _reviews(site, item_id)] == [62.5]  # 100 * (1 + 3 * 0.5) / 4

    answer = await page.goto(f"{site.base}/quality/review/{site.chat_id}")
    assert answer is not None and answer.status == 403  # calls only


async def test_a_bad_draw_names_each_field_and_draws_nothing(
    site: Site, calls: Calls, context: BrowserContext
) -> None:
    page = await context.new_page()
    await sign_in(page, site, "quality")
    before = len(_get(site, "/v1/samples?limit=100")["samples"])
    await page.goto(site.base + "/quality")
    await page.fill("#f-from", "last tuesday")
    await page.fill("#f-count", "")
    await page.fill("#f-min_duration", "-3")
    async with page.expect_response(lambda r: r.request.method == "POST") as info:
        await page.click("button:has-text('Draw a sample')")
    assert (await info.value).status == 400
    summary = page.locator(".govuk-error-summary")
    text = await summary.inner_text()
    assert "From: must be an ISO 8601 date" in text
    assert "How many calls: enter how many calls to draw" in text
    assert "Shortest call: must be a number of seconds" in text
    for target in ("#f-from", "#f-count", "#f-min_duration"):
        assert await summary.locator(f"a[href='{target}']").count() == 1
    assert await page.input_value("#f-from") == "last tuesday"
    assert await serious_violations(page) == []
    assert len(_get(site, "/v1/samples?limit=100")["samples"]) == before


async def test_the_summary_shows_each_agents_average_and_a_chart(
    site: Site, calls: Calls, context: BrowserContext
) -> None:
    # Agent a30: three reviews by two monitors on two calls, worked out by hand:
    # 100 * (w1 * s1 / 5 + w3 * s2 / 10) / 4 with weights 1 and 3.
    _review(site, calls.a30[0], "quality", {"greeting": 5, "resolution": 8})  # 85
    _review(site, calls.a30[0], "admin", {"greeting": 3, "resolution": 6})  # 60
    _review(site, calls.a30[1], "admin", {"greeting": 2.5, "resolution": 5})  # 50
    average = round((85 + 60 + 50) / 3, 2)  # 65.0
    _review(site, calls.a31[0], "quality", {"greeting": 4, "resolution": 9})  # 87.5

    page = await context.new_page()
    await sign_in(page, site, "quality")
    await page.goto(site.base + "/quality/summary")
    assert await page.input_value("#f-from") != ""  # the last 30 days by default
    await page.fill("#f-from", "2026-10-01")
    await page.fill("#f-to", "2026-11-01")
    await page.click("button:has-text('Show figures')")
    await page.wait_for_url("**/quality/summary?*")
    row = page.locator("#figures tr[data-agent='a30']")
    cells = [c.strip() for c in await row.locator("td").all_inner_texts()]
    assert cells[:3] == ["2", "2", "3"]  # calls, calls reviewed, reviews
    assert float(cells[3]) == average
    assert await page.locator("#figures tr[data-agent='a17']").count() == 0  # November
    assert float((await page.locator("#figures tr[data-agent='a31'] td").nth(3)
                  .inner_text()).strip()) == 87.5
    bars = page.locator("#score-chart rect.app-chart__bar")
    assert await bars.count() == 2  # one per agent with reviews
    bar = bars.nth(0)  # agents in order of id
    assert float(await bar.get_attribute("data-value") or "nan") == average
    assert "a30" in (await bar.locator("title").text_content() or "")
    calibration = page.locator("#calibration tbody tr")
    assert await calibration.count() == 1  # the call two monitors reviewed
    assert "25" in await calibration.locator("td").nth(3).inner_text()  # range 85 - 60
    assert await serious_violations(page) == []
    await shoot(page, "quality-summary")

    await page.fill("#f-to", "2026-09-01")  # before from
    async with page.expect_response(lambda r: "/quality/summary" in r.url) as info:
        await page.click("button:has-text('Show figures')")
    assert (await info.value).status == 400
    assert "Before: must be after from" in await page.locator(
        ".govuk-error-summary").inner_text()
    assert await serious_violations(page) == []


async def test_complaints_staff_get_no_quality_pages(
    site: Site, context: BrowserContext
) -> None:
    page = await context.new_page()
    await sign_in(page, site, "complaints")
    assert await page.locator("nav a[href='/quality']").count() == 0
    for path in ("/quality", "/quality/summary", f"/quality/review/{site.call_id}"):
        answer = await page.goto(site.base + path)
        assert answer is not None and answer.status == 403
    with pytest.raises(urllib.error.HTTPError) as refused:
        _get(site, "/v1/samples", role="complaints")
    assert refused.value.code == 403
