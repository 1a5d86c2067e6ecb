"""The holds and exports pages in a real browser against a real ``archive serve``: a live hold
placed from a search catches a call that arrives later and is released with a reason; a hold
of the items selected in a search; an evidence bundle built for a case, downloaded through the
page and verified against the archive's public key; and the roles that may not use them."""

import base64
import json
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Page

from archive.exports import check_bundle, verify_bundle
from tests.ingest import media
from tests.pages.browser import NUMBER, Site, serious_violations, shoot, sign_in


def get_json(site: Site, path: str, role: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {site.tokens[role]}"} if role else {}
    request = urllib.request.Request(site.base + path, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def push_call(site: Site, external_id: str, started_at: str, **fields: str) -> str:
    query = "&".join(f"{k}={v.replace('+', '%2B')}" for k, v in fields.items())
    body = site.push("PUT", f"/v1/recordings/{external_id}?started_at={started_at}&{query}",
                     media.wav(2.0), headers={"Content-Type": "audio/wav"})
    return str(body["id"])


async def held_for(page: Page, site: Site, item_id: str) -> str:
    """The item page's legal-hold warning ("" when the item is not held)."""
    await page.goto(f"{site.base}/items/{item_id}")
    warning = page.locator(".govuk-warning-text")
    return await warning.inner_text() if await warning.count() else ""


async def submit(page: Page, button: str) -> int:
    """Click a form's button; the status of the page the browser lands on."""
    async with page.expect_navigation() as landed:
        await page.click(button)
    response = await landed.value
    assert response is not None
    return response.status


async def test_hold_a_search_live_then_release_it(site: Site, context: BrowserContext) -> None:
    page = await context.new_page()
    await sign_in(page, site, "complaints")
    await page.fill("#f-caller_number", "020 7946 0000")
    await page.click("button:has-text('Search')")
    assert await page.locator("#results tbody tr").count() == 1
    assert await serious_violations(page) == []

    await page.click("text=Hold everything matching this search")
    await page.wait_for_url("**/holds/new?*")
    filters = await page.locator("#filters").inner_text()
    assert "Phone number" in filters and NUMBER in filters  # the filter in words
    assert "arrive later" in await page.locator("#live").inner_text()
    assert await serious_violations(page) == []
    await shoot(page, "hold-new")

    # No reason: an error summary naming the field, status 400, and no hold placed.
    await page.fill("#case_ref", "CMP-LIVE-1")
    assert await submit(page, "button:has-text('Place hold')") == 400
    summary = await page.locator(".govuk-error-summary").inner_text()
    assert "Reason is required" in summary
    assert await page.locator("#case_ref").input_value() == "CMP-LIVE-1"  # kept
    assert get_json(site, "/v1/holds?case_ref=CMP-LIVE-1", "complaints")["holds"] == []
    assert await serious_violations(page) == []

    await page.fill("#reason", "Complaint about a council tax call")
    assert await submit(page, "button:has-text('Place hold')") == 200
    assert "/holds/" in page.url and "placed=1" in page.url
    assert "placed on 1 item" in await page.locator(".govuk-notification-banner").inner_text()
    assert await page.locator("#item-count").inner_text() == "1"
    hold_url = page.url.split("?")[0]
    assert await serious_violations(page) == []
    await shoot(page, "hold")

    assert "CMP-LIVE-1" in await held_for(page, site, site.call_id)
    await page.goto(site.base + "/holds")
    row = page.locator("#holds tbody tr", has_text="CMP-LIVE-1")
    assert "Active" in await row.inner_text()
    assert await serious_violations(page) == []
    await shoot(page, "holds")

    # A call from the same number arrives after the hold: the live hold takes it.
    later = push_call(site, "call-live-2", "2026-11-25T09:30:00Z", caller_number=NUMBER,
                      agent_id="a17", service="council-tax")
    assert "CMP-LIVE-1" in await held_for(page, site, later)
    await page.goto(hold_url)
    assert await page.locator("#item-count").inner_text() == "2"
    assert await page.locator(f"#items a[href='/items/{later}']").count() == 1

    # Releasing needs a reason.
    assert await submit(page, "button:has-text('Release hold')") == 400
    assert "Reason is required" in await page.locator(".govuk-error-summary").inner_text()
    assert await page.locator(".govuk-error-summary a[href='#reason']").count() == 1
    assert "Active" in await page.locator("#hold").inner_text()
    assert await serious_violations(page) == []
    await page.fill("#reason", "Complaint closed")
    assert await submit(page, "button:has-text('Release hold')") == 200
    assert "released=1" in page.url
    details = await page.locator("#hold").inner_text()
    assert "Released" in details and "Complaint closed" in details
    assert await page.locator("button:has-text('Release hold')").count() == 0
    assert await serious_violations(page) == []
    assert await held_for(page, site, site.call_id) == ""
    assert await held_for(page, site, later) == ""
    await page.goto(site.base + "/holds?status=released")
    assert await page.locator("#holds tbody tr", has_text="CMP-LIVE-1").count() == 1


async def test_hold_the_items_selected_in_a_search(site: Site, context: BrowserContext) -> None:
    ids = [push_call(site, f"call-sel-{n}", f"2026-11-2{n}T12:00:00Z", agent_id="b22",
                     service="parking") for n in (2, 3, 4)]
    page = await context.new_page()
    await sign_in(page, site, "complaints")
    await page.fill("#f-agent_id", "b22")
    await page.click("button:has-text('Search')")
    assert await page.locator("#results tbody tr").count() == 3

    # Nothing selected: told so, nothing placed.
    assert await submit(page, "button:has-text('Hold selected')") == 400
    assert "select at least one item" in await page.locator(
        ".govuk-error-summary").inner_text()
    assert await page.locator("button:has-text('Place hold')").count() == 0
    await page.go_back()

    # The checkboxes are found by their labels.
    await page.get_by_label("Select the call of 22 Nov 2026 12:00").check()
    await page.get_by_label("Select the call of 24 Nov 2026 12:00").check()
    assert await submit(page, "button:has-text('Hold selected')") == 200
    assert await page.locator("#items tbody tr").count() == 2
    assert await serious_violations(page) == []
    await page.fill("#case_ref", "CMP-SEL-2")
    await page.fill("#reason", "Two calls named in the complaint")
    assert await submit(page, "button:has-text('Place hold')") == 200
    assert await page.locator("#item-count").inner_text() == "2"
    shown = {await a.get_attribute("href") for a in await page.locator("#items a").all()}
    assert shown == {f"/items/{ids[0]}", f"/items/{ids[2]}"}
    hold_id = page.url.split("?")[0].rsplit("/", 1)[1]
    held = get_json(site, f"/v1/holds/{hold_id}", "complaints")
    assert {i["id"] for i in held["items"]} == {ids[0], ids[2]} and held["query"] is None
    assert "CMP-SEL-2" not in await held_for(page, site, ids[1])


async def test_export_a_case_and_download_a_bundle_that_verifies(
    site: Site, context: BrowserContext, tmp_path: Path
) -> None:
    site.push("POST", "/v1/holds", json.dumps({
        "case_ref": "CMP-EXP-3", "reason": "Ombudsman referral",
        "item_ids": [site.call_id]}).encode(),
        headers={"Content-Type": "application/json"}, role="complaints")
    page = await context.new_page()
    await sign_in(page, site, "complaints")
    await page.goto(site.base + "/exports")
    assert await serious_violations(page) == []

    # No purpose: an error summary naming it, status 400, and no export made.
    await page.fill("#case_ref", "CMP-EXP-3")
    assert await submit(page, "button:has-text('Make export')") == 400
    assert "Purpose is required" in await page.locator(".govuk-error-summary").inner_text()
    assert await page.locator("#no-exports").count() == 1
    assert await serious_violations(page) == []
    # A case that holds nothing.
    await page.fill("#case_ref", "CMP-NOTHING")
    await page.fill("#purpose", "Evidence for the Ombudsman")
    assert await submit(page, "button:has-text('Make export')") == 400
    assert "no active legal hold" in await page.locator(".govuk-error-summary").inner_text()

    await page.fill("#case_ref", "CMP-EXP-3")
    assert await submit(page, "button:has-text('Make export')") == 200
    assert "/exports/" in page.url
    record = await page.locator("#export").inner_text()
    assert "Evidence for the Ombudsman" in record and "CMP-EXP-3" in record
    assert await page.locator("#export-count").inner_text() == "1"
    assert await page.locator(f"#items a[href='/items/{site.call_id}']").count() == 1
    assert await serious_violations(page) == []
    await shoot(page, "export")
    export_id = page.url.split("?")[0].rsplit("/", 1)[1]

    async with page.expect_download() as downloading:
        await page.click("text=Download bundle (ZIP)")
    bundle = tmp_path / "bundle.zip"
    await (await downloading.value).save_as(bundle)
    key = base64.b64decode(get_json(site, "/v1/signing-key")["public_key"])
    assert verify_bundle(bundle, key) == []
    report = check_bundle(bundle, key)
    assert report.ok and not report.key_from_bundle
    with zipfile.ZipFile(bundle) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert [i["id"] for i in manifest["items"]] == [site.call_id]
        assert manifest["export"]["purpose"] == "Evidence for the Ombudsman"
        assert any(n.endswith("/recording.wav") for n in zf.namelist())
    # The download through the page is audited as through the API.
    events = get_json(site, "/v1/audit/events?action=export.download", "auditor")["events"]
    assert any(e["detail"]["export_id"] == export_id for e in events)
    exported = get_json(site, f"/v1/audit/events?action=item.export&item_id={site.call_id}",
                        "auditor")["events"]
    assert any(e["detail"]["export_id"] == export_id for e in exported)

    await page.goto(site.base + "/exports")
    assert await page.locator("#exports tbody tr", has_text="Case CMP-EXP-3").count() == 1
    assert await serious_violations(page) == []
    await shoot(page, "exports")

    # Export the items selected in a search.
    await page.goto(site.base + "/search?search=1&service=housing")
    await page.get_by_label("Select the chat of 21 Nov 2026 11:00").check()
    assert await submit(page, "button:has-text('Export selected')") == 200
    assert await page.locator("#items tbody tr").count() == 1
    assert await serious_violations(page) == []
    assert await submit(page, "button:has-text('Make export')") == 400  # no purpose
    assert "Purpose is required" in await page.locator(".govuk-error-summary").inner_text()
    await page.fill("#purpose", "Subject's chat for the complaint")
    assert await submit(page, "button:has-text('Make export')") == 200
    assert await page.locator(f"#items a[href='/items/{site.chat_id}']").count() == 1


async def test_roles_that_may_not_hold_or_export(site: Site, context: BrowserContext) -> None:
    page = await context.new_page()
    await sign_in(page, site, "quality")
    menu = await page.locator("#navigation").inner_text()
    assert "Holds" not in menu and "Exports" not in menu
    await page.fill("#f-agent_id", "a17")
    await page.click("button:has-text('Search')")
    assert await page.locator("#results tbody tr").count() >= 1
    for absent in ("text=Hold everything matching this search", "#hold-selected",
                   "#export-selected", "#results input[type=checkbox]"):
        assert await page.locator(absent).count() == 0
    for path in ("/holds", "/holds/new?agent_id=a17", "/exports"):
        response = await page.goto(site.base + path)
        assert response is not None and response.status == 403

    # The data protection team reads subject-access exports only: no evidence exports
    # listed, none to be made, and no holds.
    privacy = await context.new_page()
    await context.clear_cookies()
    # (signing in lands on /search, which is not for this role: see the lead's notes)
    await sign_in(privacy, site, "privacy", lands="**/exports")
    response = await privacy.goto(site.base + "/exports")
    assert response is not None and response.status == 200
    menu = await privacy.locator("#navigation").inner_text()
    assert "Exports" in menu and "Holds" not in menu
    assert await privacy.locator("#exports").count() == 0  # the evidence exports are not shown
    assert await privacy.locator("#new-export").count() == 0
    assert await serious_violations(privacy) == []
    response = await privacy.goto(site.base + "/holds")
    assert response is not None and response.status == 403
