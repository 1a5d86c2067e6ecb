"""The demo's steps, each through the domain code the HTTP views call, as the user who would
do it: telephony and webchat push contacts (``ingest.service.Ingestor``), complaints staff
place legal holds and make an evidence bundle (``lifecycle.holds``, ``archive.exports``), an
administrator sets the retention windows and writes an evaluation form
(``lifecycle.policies``, ``archive.reviews``), quality monitors draw a sample and review calls
(``archive.sampling``, ``archive.reviews``). Every step leaves its audit events as it would
over HTTP."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from archive import exports, reviews, sampling, signing
from archive.models import Channel, Export, Item
from archive.service import Actor, Archive
from archive.settings import Settings
from ingest.metadata import parse_recording, parse_transcript_metadata
from ingest.service import Ingestor
from ingest.transcripts import Transcript, parse_transcript_json
from lifecycle import holds
from lifecycle.policies import apply_change, plan_change
from storage.base import iter_bytes
from web.demo.audio import Renderer
from web.demo.content import CALLER_2, CASE_1, CASE_2, CallPlan, ChatPlan

TELEPHONY = Actor("demo:telephony", "ingest")
WEBCHAT = Actor("demo:webchat", "ingest")
ADMIN = Actor("demo:admin", "admin")
COMPLAINTS = Actor("demo:complaints", "complaints")
QUALITY = Actor("demo:quality", "quality")
QUALITY_LEAD = Actor("demo:quality-lead", "quality")  # a second reviewer: calibration
WINDOWS = {Channel.CALL: 30, Channel.CHAT: 730}
FORM: dict[str, Any] = {"name": "Call handling", "criteria": [
    {"key": "greeting", "label": "Greets the caller and gives their name", "weight": 1,
     "max_score": 5},
    {"key": "verification", "label": "Checks identity before discussing the account",
     "weight": 2, "max_score": 5},
    {"key": "resolution", "label": "Resolves the query or sets a clear next step",
     "weight": 3, "max_score": 10},
    {"key": "empathy", "label": "Listens and shows empathy", "weight": 2, "max_score": 5},
    {"key": "close", "label": "Summarises and closes the call", "weight": 1, "max_score": 5}]}
SCORES = (  # (scores, notes, training need) of the reviews, in turn
    ({"greeting": 5, "verification": 5, "resolution": 9, "empathy": 4, "close": 5},
     "Clear and friendly; next steps explained well.", False),
    ({"greeting": 4, "verification": 2, "resolution": 6, "empathy": 3, "close": 4},
     "Did not confirm the address before discussing the account.", True),
    ({"greeting": 5, "verification": 4, "resolution": 10, "empathy": 5, "close": 5},
     "Excellent call.", False),
    ({"greeting": 3, "verification": 4, "resolution": 5, "empathy": 2, "close": 3},
     "Rushed the caller; little empathy when they were upset.", True),
    ({"greeting": 5, "verification": 5, "resolution": 7, "empathy": 4, "close": 4}, None, False),
)
LEAD_SCORES = {"greeting": 4, "verification": 3, "resolution": 8, "empathy": 4, "close": 5}
Progress = Callable[[str], None]


@dataclass(frozen=True)
class StoredCall:
    plan: CallPlan
    item: Item
    channels: int
    pci: bool


async def ingest_calls(ingestor: Ingestor, renderer: Renderer, tenant: str, plans: list[CallPlan],
                       *, batch: int, progress: Progress) -> list[StoredCall]:
    """Render the calls a batch at a time (in parallel), then push each as a telephony
    system would."""
    stored: list[StoredCall] = []
    for start in range(0, len(plans), batch):
        chunk = plans[start:start + batch]
        recordings = await asyncio.gather(*(renderer.render(p) for p in chunk))
        for plan, rec in zip(chunk, recordings, strict=True):
            metadata = parse_recording(plan.metadata(rec.duration, rec.pci))
            result = await ingestor.recording(tenant=tenant, metadata=metadata,
                                              body=iter_bytes(rec.wav), actor=TELEPHONY)
            stored.append(StoredCall(plan, result.item, rec.channels, bool(rec.pci)))
        if len(stored) % 20 < batch or len(stored) == len(plans):
            progress(f"{len(stored)} of {len(plans)} calls archived")
    return stored


async def ingest_chats(ingestor: Ingestor, tenant: str,
                       plans: list[ChatPlan]) -> list[tuple[ChatPlan, Item, int]]:
    """Push each chat as a webchat platform would; with the card numbers its redaction
    removed."""
    stored = []
    for plan in plans:
        transcript, rest = parse_transcript_json(plan.payload())
        metadata = parse_transcript_metadata(rest)
        result = await ingestor.transcript(tenant=tenant, metadata=metadata,
                                           transcript=transcript, actor=WEBCHAT)
        stored.append((plan, result.item, transcript.redactions.cards))
    return stored


async def place_holds(archive: Archive, tenant: str, calls: list[StoredCall],
                      chats: list[tuple[ChatPlan, Item, int]]) -> list[holds.Placed]:
    """The two complaint cases: one over the caller's calls and chat, one over every call
    from a number (a query hold, which also catches calls still to come)."""
    case_1 = [c.item.id for c in calls if c.plan.case == CASE_1]
    case_1 += [item.id for plan, item, _ in chats if plan.case == CASE_1]
    first = await holds.place_hold(
        archive, tenant=tenant, actor=COMPLAINTS, case_ref=CASE_1,
        reason="Stage 2 complaint about council tax recovery action. Keep the caller's calls "
               "and chat until the complaint and any Ombudsman review are closed.",
        item_ids=case_1)
    second = await holds.place_hold(
        archive, tenant=tenant, actor=COMPLAINTS, case_ref=CASE_2,
        reason="Complaint about repeated missed emergency repairs; possible disrepair claim. "
               "Keep every call from the tenant's number.",
        query={"caller_number": CALLER_2})
    return [first, second]


async def set_windows(archive: Archive, tenant: str) -> None:
    """Calls 30 days, chats 730: previewed, then applied with the preview's token."""
    for channel, days in WINDOWS.items():
        plan = await plan_change(archive, tenant, channel, days)
        await apply_change(archive, tenant=tenant, channel=channel, days=days, actor=ADMIN,
                           source="cli", reason="Demo: the council's records retention schedule",
                           confirm=plan.confirm)


async def quality(archive: Archive, tenant: str, now: datetime) -> tuple[sampling.Drawn, int]:
    """An evaluation form (written by an administrator), a sample of two calls per agent
    over the last four weeks, and reviews of the first few calls of it."""
    await reviews.save_form(archive.db, tenant=tenant, actor=ADMIN.name, role=ADMIN.role,
                            now=now, form=reviews.parse_form(FORM))
    drawn = await sampling.draw(archive.db, tenant=tenant, actor=QUALITY, raw={
        "from": (now - timedelta(days=29)).isoformat(), "to": now.isoformat(),
        "per_agent": 2, "seed": "demo"}, now=now)
    written = 0
    for call, (scores, notes, need) in zip(drawn.calls, SCORES, strict=False):
        await reviews.create_review(
            archive.db, tenant=tenant, actor=QUALITY.name, role=QUALITY.role, now=now,
            item_id=call.id, body={"form": FORM["name"], "scores": scores, "notes": notes,
                                   "training_need": need})
        written += 1
    if drawn.calls:
        await reviews.create_review(
            archive.db, tenant=tenant, actor=QUALITY_LEAD.name, role=QUALITY_LEAD.role,
            now=now, item_id=drawn.calls[0].id,
            body={"form": FORM["name"], "scores": LEAD_SCORES,
                  "notes": "Calibration: second opinion."})
        written += 1
    return drawn, written


def _chat_text(data: bytes) -> str:
    return Transcript.from_json_bytes(data).to_text()


async def evidence_bundle(archive: Archive, settings: Settings,
                          tenant: str) -> tuple[Export, int]:
    """An evidence export of the first complaint case, downloaded once (the signed ZIP is
    streamed and discarded, as a download would be): its record and the bundle's size."""
    purpose = f"Evidence for the Stage 2 review of complaint {CASE_1}"
    export = await exports.create_export(archive, tenant=tenant, actor=COMPLAINTS,
                                         kind=exports.EVIDENCE, purpose=purpose,
                                         case_ref=CASE_1)
    signer = await asyncio.to_thread(signing.load_or_create, signing.key_path(settings))
    await exports.record_download(archive, export, COMPLAINTS, purpose)
    size = 0
    async for piece in exports.bundle(archive, export, signer, chat_text=_chat_text):
        size += len(piece)
    return export, size

