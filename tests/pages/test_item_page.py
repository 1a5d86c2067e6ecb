"""The item page in a real browser: a stereo call's waveform under the player with the legend
of its two channels (selecting a point of it seeks the player), a mono call's, none for a chat;
the item's history for the roles that may read it, and its audit trail for administrators."""

import io
import json
import wave
from collections.abc import Iterator

import pytest
from playwright.async_api import BrowserContext, Page

from tests.ingest import media
from tests.pages.browser import Site, serious_violations, shoot, sign_in

LOADED = ("() => { const i = document.getElementById('waveform'); "
          "return i !== null && i.complete && i.naturalWidth > 0; }")


def conversation(seconds: float, rate: int = 8000) -> bytes:
    """A stereo WAV of two parties taking turns (1.5 s each, the left first), each turn a tone
    whose loudness wavers like speech: what a PBX recording each side on its own channel
    gives, and a waveform where the two are told apart at a glance."""
    turn = "gt(sin(2*PI*t/3),0)"  # the left party's turns; the right speaks in between
    left = f"0.5*sin(2*PI*440*t)*{turn}*(0.55+0.45*sin(2*PI*3*t))"
    right = f"0.5*sin(2*PI*660*t)*(1-{turn})*(0.55+0.45*sin(2*PI*4*t+1))"
    pcm = media.ffmpeg("-f", "lavfi", "-i", f"aevalsrc='{left}|{right}':s={rate}:d={seconds}",
                       "-c:a", "pcm_s16le", "-f", "s16le", "-")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stereo(site: Site) -> Iterator[str]:
    """A 6 s stereo call whose agent was corrected once (so it has a history)."""
    call = site.push("PUT", "/v1/recordings/call-stereo?started_at=2026-11-22T14:30:00Z"
                     "&caller_number=%2B442079460001&direction=inbound&agent_id=a17"
                     "&service=housing", conversation(6.0),
                     headers={"Content-Type": "audio/wav"})
    site.push("PATCH", f"/v1/items/{call['id']}", json.dumps({
        "reason": "The call was answered by another agent", "fields": {"agent_id": "a18"}}
    ).encode(), headers={"Content-Type": "application/json"}, role="privacy")
    yield str(call["id"])


async def _waveform_size(page: Page) -> tuple[int, int]:
    await page.wait_for_function(LOADED)
    size = await page.locator("#waveform").evaluate("i => [i.naturalWidth, i.naturalHeight]")
    return size[0], size[1]


async def test_a_stereo_call_shows_its_waveform_with_both_channels_history_and_audit_trail(
    site: Site, stereo: str, context: BrowserContext,
) -> None:
    page = await context.new_page()
    await sign_in(page, site, "admin")
    await page.goto(f"{site.base}/items/{stereo}")
    assert await _waveform_size(page) == (1200, 240)
    alt = await page.locator("#waveform").get_attribute("alt")
    assert alt is not None and "6 second" in alt and "two channels" in alt
    legend = await page.locator("#waveform-legend").inner_text()
    assert "Channel 1 (left)" in legend and "Channel 2 (right)" in legend
    await shoot(page, "item-call-stereo")
    history = page.locator("#history")
    assert "1 earlier version" in await history.inner_text()
    await history.locator("summary").click()
    opened = await history.inner_text()
    assert "The call was answered by another agent" in opened
    assert "a17" in opened and "a18" in opened
    trail = await page.locator("#audit-trail").inner_text()
    assert "item.ingest" in trail and "item.rectify" in trail and "item.view" in trail
    assert await serious_violations(page) == []  # with the history open

    # Drawn once (audited as item.waveform), then served from its encrypted cache.
    await page.reload()
    assert await _waveform_size(page) == (1200, 240)
    assert "item.waveform" in await page.locator("#audit-trail").inner_text()

    # Selecting the middle of the picture moves the player to the middle of the call.
    assert not await page.locator("#waveform-hint").is_hidden()
    player = page.locator("#player")
    await player.evaluate("a => new Promise(ok => a.readyState >= 1 ? ok() : "
                          "a.addEventListener('loadedmetadata', ok, {once: true}))")
    box = await page.locator("#waveform").bounding_box()
    assert box is not None
    await page.locator("#waveform").click(position={"x": box["width"] / 2, "y": 20})
    await page.wait_for_function(
        "() => Math.abs(document.getElementById('player').currentTime - 3) < 0.5")


async def test_quality_sees_the_waveform_but_neither_history_nor_audit_trail(
    site: Site, stereo: str, context: BrowserContext,
) -> None:
    page = await context.new_page()
    await sign_in(page, site, "quality")
    await page.goto(f"{site.base}/items/{stereo}")
    assert await _waveform_size(page) == (1200, 240)
    assert await page.locator("#waveform-legend").count() == 1
    assert await page.locator("#history").count() == 0
    assert await page.locator("#audit-trail").count() == 0
    headings = await page.locator("h2").all_inner_texts()
    assert "History" not in headings and "Audit trail" not in headings
    assert await serious_violations(page) == []


async def test_complaints_staff_see_the_history_but_not_the_audit_trail(
    site: Site, stereo: str, context: BrowserContext,
) -> None:
    page = await context.new_page()
    await sign_in(page, site, "complaints")
    await page.goto(f"{site.base}/items/{stereo}")
    assert "1 earlier version" in await page.locator("#history").inner_text()
    assert await page.locator("#audit-trail").count() == 0
    # A call never corrected says so.
    await page.goto(f"{site.base}/items/{site.call_id}")
    assert "never corrected" in await page.locator("#history").inner_text()


async def test_a_mono_call_has_no_legend_and_a_chat_no_waveform(
    site: Site, context: BrowserContext,
) -> None:
    page = await context.new_page()
    await sign_in(page, site, "admin")
    await page.goto(f"{site.base}/items/{site.call_id}")
    assert await _waveform_size(page) == (1200, 200)
    assert await page.locator("#waveform-legend").count() == 0
    alt = await page.locator("#waveform").get_attribute("alt")
    assert alt is not None and "8 second" in alt and "one channel" in alt
    assert await serious_violations(page) == []

    await page.goto(f"{site.base}/items/{site.chat_id}")
    assert await page.locator("#waveform").count() == 0
    answer = await page.request.get(f"{site.base}/v1/items/{site.chat_id}/waveform.png")
    assert answer.status == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "only calls have a waveform" in (await answer.json())["detail"]
