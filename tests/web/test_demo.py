"""``archive demo``: the real command seeds a tenant, and what it made is checked through the API
of a real ``archive serve`` over the same data: the calls (some stereo, card details silenced,
one special category, numbers only from Ofcom's drama ranges), chats (a card number removed),
two legal holds, a reviewed quality sample, an evidence export, the 30/730-day windows, and the
overdue items: exactly the unheld ones are what ``archive purge --dry-run`` reports and what a
real purge pass destroys, while the held one stays. Audio decodes, is not silent and lasts as
long as the call. A second run on the same tenant is refused and adds nothing; every printed
token works. The spoken (espeak-ng) path is tested when espeak-ng is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from math import sqrt
from pathlib import Path
from typing import Any

import pytest

from archive.models import Role
from ingest.audio import find_ffmpeg
from tests.helpers import run_archive
from tests.servers import archive_serve, stop

# Ofcom's numbers for drama: 020 7946 0xxx, 0113/0114/0117 496 0xxx, 07700 900xxx.
DRAMA = re.compile(r"^\+44(2079460|1134960|1144960|1174960|7700900)\d{3}$")
TOKEN_LINE = re.compile(r"^  (\w+) +(arc_\S+)$", re.MULTILINE)
RMS_FLOOR = 300.0  # of 32768: speech or tone bursts, far above digital silence


@dataclass
class Demo:
    base: str
    data_dir: Path
    stdout: str
    tokens: dict[str, str]
    items: list[dict[str, Any]]  # every item of the tenant as the admin sees it at the start

    def get(self, path: str, role: str = "admin") -> Any:
        return get(self.base, self.tokens[role], path)

    def media(self, item_id: str, role: str = "admin") -> bytes:
        request = urllib.request.Request(f"{self.base}/v1/items/{item_id}/media",
                                         headers={"Authorization": f"Bearer {self.tokens[role]}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            data: bytes = answer.read()
            return data


def get(base: str, token: str, path: str) -> Any:
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def run_demo(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_archive(["demo", *args], data_dir)


def printed_tokens(stdout: str) -> dict[str, str]:
    return dict(TOKEN_LINE.findall(stdout))


def all_items(base: str, token: str, status: str = "active") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get(base, token, f"/v1/items?limit=500&status={status}")["items"]
    return items


def decode(data: bytes, channels: int) -> list[array[int]]:
    """The recording's samples, one array per channel (ffmpeg decodes WAV and FLAC alike)."""
    raw = subprocess.run([find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", "pipe:0",
                          "-f", "s16le", "-ac", str(channels), "pipe:1"],
                         input=data, capture_output=True, check=True).stdout
    samples = array("h", raw)
    return [samples[c::channels] for c in range(channels)]


def rms(samples: array[int]) -> float:
    return sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def check_recording(demo: Demo, item: dict[str, Any]) -> None:
    """The call's audio decodes, lasts as long as the call and is sound in every channel
    (each party in their own channel of a stereo call); card ranges are silent."""
    channels = item["media"]["channels"]
    tracks = decode(demo.media(item["id"]), channels)
    seconds = len(tracks[0]) / 8000
    started = datetime.fromisoformat(item["started_at"])
    ended = datetime.fromisoformat(item["ended_at"])
    assert abs(seconds - item["duration"]) < 0.05
    assert abs((ended - started).total_seconds() - item["duration"]) < 0.05
    assert 20 <= seconds <= 90
    for track in tracks:
        assert rms(track) > RMS_FLOOR
    for start, end in item["media"]["pci_silenced"]:
        for track in tracks:
            assert max(abs(s) for s in track[int(start * 8000):int(end * 8000)]) == 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo with its defaults (60 calls, 20 chats) and tone audio, and a server over it."""
    data_dir = tmp_path_factory.mktemp("demo") / "var"
    done = run_demo(data_dir, "--tones")
    assert done.returncode == 0, done.stderr
    assert "ffmpeg tones" in done.stderr
    tokens = printed_tokens(done.stdout)
    proc, base, _ = archive_serve(data_dir, "demo", role="auditor")
    try:
        yield Demo(base, data_dir, done.stdout, tokens, all_items(base, tokens["admin"]))
    finally:
        stop(proc)


def test_it_prints_a_working_token_for_each_role_and_the_url(demo: Demo) -> None:
    assert set(demo.tokens) == {r.value for r in Role}
    for role, token in demo.tokens.items():
        assert get(demo.base, token, "/v1/whoami") | {"token_id": ""} == {
            "tenant": "demo", "role": role, "token_id": ""}
    assert "Open http://127.0.0.1:8080/signin" in demo.stdout
    assert "Demo tokens" in demo.stdout


def test_calls_are_varied_stereo_in_part_and_use_only_drama_numbers(demo: Demo) -> None:
    calls = [i for i in demo.items if i["channel"] == "call"]
    assert len(calls) == 60
    stereo = [c for c in calls if c["media"]["channels"] == 2]
    assert 15 <= len(stereo) <= 25
    assert "60 (20 stereo, 2 with card details silenced, 1 special category)" in demo.stdout
    assert len({c["agent_id"] for c in calls}) == 6
    assert len({c["service"] for c in calls}) == 6
    assert {c["direction"] for c in calls} == {"inbound", "outbound"}
    assert all(20 <= c["duration"] <= 90 for c in calls)
    for c in calls:
        assert DRAMA.match(c["caller_number"]) and DRAMA.match(c["called_number"]), c
    assert sum(c["special_category"] for c in calls) == 1
    paid = [c for c in calls if c["media"]["pci_silenced"]]
    assert len(paid) == 2
    assert all(c["media"]["stored_as"] == "flac" for c in paid)  # silenced, kept lossless
    started = sorted(datetime.fromisoformat(c["started_at"]) for c in calls)
    assert (datetime.now(UTC) - started[0]).days <= 36
    assert started[-1] < datetime.now(UTC)


def test_tone_audio_decodes_is_not_silent_and_lasts_as_long_as_the_call(demo: Demo) -> None:
    calls = [i for i in demo.items if i["channel"] == "call"]
    mono = next(c for c in calls if c["media"]["channels"] == 1 and c["media"]["stored_as"] ==
                "original")
    stereo = next(c for c in calls if c["media"]["channels"] == 2 and c["media"]["stored_as"] ==
                  "original")
    paid = next(c for c in calls if c["media"]["pci_silenced"])
    for item in (mono, stereo, paid):
        check_recording(demo, item)


def test_chats_have_customers_and_the_card_number_is_removed(demo: Demo) -> None:
    chats = [i for i in demo.items if i["channel"] == "chat"]
    assert len(chats) == 20
    for chat in chats:
        customer = chat["customer"]
        assert customer["name"] and customer["postcode"]
        assert re.search(r"@example\.(com|org|net)$", customer["email"])
    removed = []
    for chat in chats:
        transcript = json.loads(demo.media(chat["id"], role="complaints"))
        senders = {m["from"] for m in transcript["messages"]}
        assert {"customer", "agent", "bot", "system"} <= senders
        assert "4111" not in json.dumps(transcript)
        if transcript["redactions"]["cards"]:
            removed.append(chat)
    assert len(removed) == 1


def test_two_complaint_holds_one_by_items_one_by_query(demo: Demo) -> None:
    holds = demo.get("/v1/holds", role="complaints")["holds"]
    by_case = {h["case_ref"]: h for h in holds}
    assert set(by_case) == {"CMP-2026-0142", "CMP-2026-0157"}
    assert all(h["status"] == "active" and h["placed_by"] == "demo:complaints" for h in holds)
    assert by_case["CMP-2026-0142"]["query"] is None
    assert by_case["CMP-2026-0142"]["item_count"] == 4
    assert by_case["CMP-2026-0157"]["query"] == {"caller_number": "0113 496 0157"}
    assert by_case["CMP-2026-0157"]["item_count"] == 2
    detail = demo.get(f"/v1/holds/{by_case['CMP-2026-0142']['id']}", role="complaints")
    assert sorted(i["channel"] for i in detail["items"]) == ["call", "call", "call", "chat"]


def test_a_sample_with_reviews_and_an_evidence_export(demo: Demo) -> None:
    samples = demo.get("/v1/samples", role="quality")["samples"]
    assert len(samples) == 1 and samples[0]["created_by"] == "demo:quality"
    sample = demo.get(f"/v1/samples/{samples[0]['id']}", role="quality")
    assert len(sample["per_agent"]) >= 5
    scores = []
    for call in sample["items"]:
        scores += [r["score"] for r in
                   demo.get(f"/v1/items/{call['id']}/reviews", role="quality")["reviews"]]
    assert len(scores) == 6 and len(set(scores)) >= 4
    summary = demo.get("/v1/quality/summary?from=2020-01-01&to=2100-01-01", role="quality")
    assert len(summary["agents"]) == 6 and summary["calibration"]

    events = demo.get("/v1/audit/events?action=export.create", role="auditor")["events"]
    assert len(events) == 1
    export = demo.get(f"/v1/exports/{events[0]['detail']['export_id']}", role="complaints")
    assert export["case_ref"] == "CMP-2026-0142" and export["item_count"] == 4


def test_retention_windows_are_30_and_730_days(demo: Demo) -> None:
    policies = {p["channel"]: p for p in demo.get("/v1/policies")["policies"]}
    assert policies["call"]["days"] == 30 and policies["chat"]["days"] == 730
    assert policies["call"]["set_by"] == "demo:admin"


def _overdue(items: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """Ids of the active items past their date: (not held, held)."""
    now = datetime.now(UTC)
    due = [i for i in items if datetime.fromisoformat(i["retention"]["retain_until"]) <= now]
    return {i["id"] for i in due if not i["holds"]}, {i["id"] for i in due if i["holds"]}


def test_a_second_run_on_the_same_tenant_is_refused_and_adds_nothing(demo: Demo) -> None:
    again = run_demo(demo.data_dir, "--tones", "--calls", "10", "--chats", "3")
    assert again.returncode == 1
    assert "already has 80 item(s)" in again.stderr and "--tenant" in again.stderr
    assert again.stdout == ""
    assert len(all_items(demo.base, demo.tokens["admin"])) == 80
    assert len(demo.get("/v1/holds", role="complaints")["holds"]) == 2


def test_bad_counts_are_refused_before_anything_is_made(tmp_path: Path) -> None:
    done = run_demo(tmp_path / "var", "--calls", "3")
    assert done.returncode == 2 and "--calls must be from 10" in done.stderr
    assert done.stdout == ""


def test_exactly_the_unheld_overdue_items_are_purged_and_the_held_one_stays(demo: Demo) -> None:
    unheld, held = _overdue(demo.items)
    assert len(unheld) == 5 and len(held) == 1  # 4 calls and a 2-year-old chat; a held call
    assert ("overdue: 6 item(s) past their retention window: 5 not held, 1 kept by legal "
            "holds") in demo.stdout
    assert "will destroy the 5 overdue item(s) that are not held" in demo.stdout
    preview = demo.get("/v1/lifecycle/preview")["channels"]
    assert sum(c["overdue"] for c in preview) == 5
    assert sum(c["kept_by_holds"] for c in preview) == 1

    dry = run_archive(["purge", "--dry-run", "--tenant", "demo"], demo.data_dir)
    assert dry.returncode == 0, dry.stderr
    rows = [line.split() for line in dry.stdout.splitlines() if line.startswith("demo ")]
    assert {r[1]: (int(r[2]), int(r[3]), int(r[4])) for r in rows} == {
        "call": (4, 1, 4), "chat": (1, 0, 1)}

    done = run_archive(["purge"], demo.data_dir)
    assert done.returncode == 0, done.stderr
    assert "purge: 5 item(s) destroyed" in done.stdout
    for item_id in unheld:
        assert demo.get(f"/v1/items/{item_id}")["status"] == "purged"
    (kept,) = held
    assert demo.get(f"/v1/items/{kept}")["status"] == "active"
    still = {i["id"] for i in all_items(demo.base, demo.tokens["admin"])}
    assert still == {i["id"] for i in demo.items} - unheld


def test_another_tenant_can_be_seeded_beside_it_and_sees_only_its_own(demo: Demo) -> None:
    done = run_demo(demo.data_dir, "--tenant", "demo2", "--calls", "10", "--chats", "3",
                    "--tones")
    assert done.returncode == 0, done.stderr
    tokens = printed_tokens(done.stdout)
    assert get(demo.base, tokens["admin"], "/v1/whoami")["tenant"] == "demo2"
    items = all_items(demo.base, tokens["admin"])
    assert len(items) == 13 and all(i["tenant"] == "demo2" for i in items)
    unheld, held = _overdue(items)
    assert len(unheld) == 3 and len(held) == 1  # 2 calls and the old chat; the held call
    assert "will destroy the 3 overdue item(s)" in done.stdout
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(demo.base, tokens["admin"], f"/v1/items/{demo.items[0]['id']}")
    assert refused.value.code == 404


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed (apt-get install espeak-ng): the demo "
                           "falls back to tones, tested above")
def test_spoken_audio_with_espeak_ng(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    done = run_demo(data_dir, "--calls", "10", "--chats", "3")
    assert done.returncode == 0, done.stderr
    assert "audio by espeak-ng" in done.stdout
    tokens = printed_tokens(done.stdout)
    proc, base, _ = archive_serve(data_dir, "demo", role="auditor")
    try:
        items = all_items(base, tokens["admin"])
        demo = Demo(base, data_dir, done.stdout, tokens, items)
        calls = [i for i in items if i["channel"] == "call"]
        assert len(calls) == 10
        for channels in (1, 2):
            check_recording(demo, next(c for c in calls if c["media"]["channels"] == channels
                                       and not c["media"]["pci_silenced"]))
        check_recording(demo, next(c for c in calls if c["media"]["pci_silenced"]))
    finally:
        stop(proc)
