"""After ``archive demo``, every staff page shows data (the issue's "done when"): the real command
seeds a tenant, a real ``archive serve`` (no worker, so nothing is purged under the test) serves
it, and chromium signs in with the tokens the demo printed. Search has results, a call's page
its player and waveform, a chat's page its conversation, the holds list the two complaint holds,
a hold page its items, the exports page the evidence bundle, the quality pages the sample and
the per-agent figures, the lifecycle page the overdue items the demo made (with the one a hold
keeps) and its chart, the audit page the events and the verified chain. Every page passes axe's
serious and critical WCAG checks."""

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page

from tests.helpers import run_archive
from tests.pages.browser import Site, serious_violations, sign_in
from tests.servers import archive_serve, stop

OVERDUE = re.compile(r"overdue: (\d+) item\(s\) past their retention window: (\d+) not held, "
                     r"(\d+) kept by legal holds")


def _get(site: Site, path: str) -> Any:
    request = urllib.request.Request(site.base + path,
                                     headers={"Authorization": f"Bearer {site.tokens['admin']}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str]]:
    """The demo with its defaults (spoken when espeak-ng is installed) and a server over it:
    a Site with the printed tokens, a stereo call and the complaint's chat; and the output."""
    data_dir: Path = tmp_path_factory.mktemp("demo-pages") / "var"
    done = run_archive(["demo"], data_dir)
    assert done.returncode == 0, done.stderr
    tokens = dict(re.findall(r"^  (\w+) +(arc_\S+)$", done.stdout, re.MULTILINE))
    proc, base, _ = archive_serve(data_dir, "demo", role="auditor")
    try:
        site = Site(base, tokens, "", "", data_dir)
        items = _get(site, "/v1/items?limit=500")["items"]
        site.call_id = next(i["id"] for i in items if i["media"].get("channels") == 2)
        site.chat_id = next(i["id"] for i in items if i["channel"] == "chat"
                            and i["customer"]["name"] == "Margaret Ellison")
        yield site, done.stdout
    finally:
        stop(proc)


async def _sign_in_as(page: Page, site: Site, role: str) -> None:
    """Sign in with the demo's token of ``role`` (each role lands on its own first page)."""
    await page.goto(site.base + "/signin")
    await page.fill("#token", site.tokens[role])
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url(lambda url: "/signin" not in url)


async def _rows(page: Page, table: str) -> int:
    return await page.locator(f"#{table} tbody tr").count()


async def test_complaints_staff_find_play_hold_and_export(
    demo: tuple[Site, str], context: BrowserContext
) -> None:
    site, _ = demo
    page = await context.new_page()
    await sign_in(page, site, "complaints")

    await page.goto(site.base + "/search?search=1")
    assert await _rows(page, "results") >= 20
    assert await serious_violations(page) == []
    await page.goto(site.base + "/search?caller_number=07700+900142")
    assert await _rows(page, "results") == 3  # the first complaint's calls
    assert await serious_violations(page) == []

    await page.goto(f"{site.base}/items/{site.call_id}")
    assert await page.locator("#player").count() == 1
    await page.wait_for_function(
        "document.querySelector('#waveform').complete "
        "&& document.querySelector('#waveform').naturalWidth > 0")
    assert await page.locator("#waveform-legend").count() == 1  # stereo: agent and caller
    assert await serious_violations(page) == []
    await page.goto(f"{site.base}/items/{site.chat_id}")
    assert await page.locator("#conversation li").count() >= 6
    assert "enforcement letter" in await page.locator("#conversation").inner_text()
    assert await serious_violations(page) == []

    await page.goto(site.base + "/holds")
    assert await _rows(page, "holds") == 2
    text = await page.locator("#holds").inner_text()
    assert "CMP-2026-0142" in text and "CMP-2026-0157" in text
    assert await serious_violations(page) == []
    await page.click("#holds a:has-text('CMP-2026-0142')")
    await page.wait_for_url("**/holds/*")
    assert await page.locator("#item-count").inner_text() == "4"
    assert await serious_violations(page) == []

    await page.goto(site.base + "/exports")
    assert await _rows(page, "exports") == 1
    assert "CMP-2026-0142" in await page.locator("#exports").inner_text()
    assert await serious_violations(page) == []


async def test_quality_monitors_see_the_sample_and_the_figures(
    demo: tuple[Site, str], context: BrowserContext
) -> None:
    site, _ = demo
    page = await context.new_page()
    await _sign_in_as(page, site, "quality")
    await page.goto(site.base + "/quality")
    assert await _rows(page, "samples") == 1
    assert await serious_violations(page) == []
    await page.click("#samples a >> nth=0")
    await page.wait_for_url("**/quality/samples/*")
    assert await _rows(page, "calls") == 12
    assert await page.locator("#progress").inner_text() == "Reviewed 5 of 12 calls."
    assert await serious_violations(page) == []
    await page.goto(site.base + "/quality/summary")
    assert await _rows(page, "figures") == 6  # one row per agent
    assert await _rows(page, "calibration") >= 1  # a call two monitors reviewed
    assert await serious_violations(page) == []


async def test_the_lifecycle_page_shows_what_the_next_pass_destroys(
    demo: tuple[Site, str], context: BrowserContext
) -> None:
    site, stdout = demo
    found = OVERDUE.search(stdout)
    assert found is not None
    unheld, kept = int(found.group(2)), int(found.group(3))
    assert unheld == 5 and kept == 1
    page = await context.new_page()
    await _sign_in_as(page, site, "admin")
    await page.goto(site.base + "/lifecycle")
    assert await page.locator("#total-overdue").inner_text() == str(unheld)
    cells = page.locator("#overdue tbody tr td:nth-child(3)")
    assert sum(int(c) for c in await cells.all_inner_texts()) == kept
    assert await page.locator("#policy-call td").first.inner_text() == "30"
    assert await page.locator("#policy-chat td").first.inner_text() == "730"
    assert await page.locator("#forecast rect.app-chart__bar").count() >= 3
    assert await page.locator("#forecast rect[data-series='kept by holds']").count() >= 1
    assert int(await page.locator("#total-destroy").inner_text()) > 40
    assert await serious_violations(page) == []


async def test_the_audit_page_shows_the_demo_events_and_a_verified_chain(
    demo: tuple[Site, str], context: BrowserContext
) -> None:
    site, _ = demo
    page = await context.new_page()
    await _sign_in_as(page, site, "auditor")
    await page.goto(site.base + "/audit")
    chain = await page.locator("#chain-text").inner_text()
    assert re.fullmatch(r"Chain intact: \d+ events checked\.", chain)
    assert int(chain.split()[2]) > 100
    assert await _rows(page, "events") > 0
    assert await serious_violations(page) == []
    await page.goto(site.base + "/audit?action=hold.place")
    actors = await page.locator("#events tbody tr").all_inner_texts()
    assert len(actors) == 2 and all("demo:complaints" in a for a in actors)
    assert await serious_violations(page) == []
