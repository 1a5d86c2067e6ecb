"""Data-subject rights in the service layer: rectification versions, erasure and anonymisation
leaving nothing behind, and content replacement that is all or nothing."""

import json
from datetime import timedelta

import pytest
from sqlmodel import select

from archive import rights
from archive.errors import BadRequestError, ConflictError, NotFoundError
from archive.ids import uuid7
from archive.models import (
    AuditEvent,
    Channel,
    Destruction,
    Hold,
    HoldItem,
    Item,
    ItemStatus,
    ItemVersion,
)
from archive.service import Actor, Archive
from archive.tokens import ensure_tenant
from ingest.transcripts import Message, Transcript
from storage.base import iter_bytes, read_all
from storage.errors import StoreUnavailableError
from tests.conftest import START

PRIVACY = Actor("token:dpo", "privacy")
INGEST = Actor("token:ingest", "ingest")
NAME, EMAIL, PHONE, POSTCODE = "Ann Smith", "ann.smith@example.org", "+442079460123", "SW1A 1AA"
PERSONAL = [NAME, "Ann", "Smith", EMAIL, PHONE, "7946", POSTCODE, "1AA", "07700 900123"]


def _transcript() -> Transcript:
    at = START + timedelta(seconds=5)
    return Transcript(messages=(
        Message(at, "customer", NAME, f"Hi, I'm {NAME}, email {EMAIL}, phone 07700 900123"),
        Message(at, "agent", "Raj Patel", "Thanks Ann. Is your postcode sw1a 1aa?"),
        Message(at, "customer", NAME, "Yes. Council tax band D."),
    ))


async def _chat(archive: Archive, external_id: str = "chat-1") -> Item:
    return await archive.put(
        tenant="camden", channel=Channel.CHAT, external_id=external_id, started_at=START,
        media_type="application/json", chunks=iter_bytes(_transcript().to_json_bytes()),
        actor=INGEST, fields={"customer_name": NAME, "customer_name_key": NAME.casefold(),
                              "customer_email": EMAIL, "customer_postcode": POSTCODE,
                              "agent_id": "raj", "service": "council-tax", "tags": ["vip"]})


async def _call(archive: Archive, external_id: str = "call-1") -> Item:
    return await archive.put(
        tenant="camden", channel=Channel.CALL, external_id=external_id, started_at=START,
        media_type="audio/wav", chunks=iter_bytes(b"RIFF" + b"\0" * 5000), actor=INGEST,
        fields={"caller_number": PHONE, "called_number": "+441632960001",
                "customer_postcode": POSTCODE, "direction": "inbound", "agent_id": "raj",
                "service": "housing", "queue": "repairs", "duration": 42.0,
                "ended_at": START + timedelta(seconds=42), "extra": {"crm": "x"}})


@pytest.fixture(autouse=True)
async def _tenants(archive: Archive) -> None:
    async with archive.db.session() as session:
        for t in ("camden", "barnet"):
            await ensure_tenant(session, t, archive.clock.now())
        await session.commit()


async def _hold(archive: Archive, item: Item, case_ref: str = "C-2026-001") -> None:
    hold = Hold(id=uuid7(), tenant="camden", case_ref=case_ref, reason="complaint",
                placed_by="token:x", placed_at=archive.clock.now())
    async with archive.db.session() as session:
        session.add(hold)
        await session.flush()
        session.add(HoldItem(hold_id=hold.id, item_id=item.id, added_by="token:x",
                             added_at=archive.clock.now()))
        await session.commit()


async def _versions(archive: Archive, item: Item) -> list[ItemVersion]:
    async with archive.db.reader() as session:
        return list((await session.exec(
            select(ItemVersion).where(ItemVersion.item_id == item.id))).all())


async def _keys(archive: Archive) -> list[str]:
    return sorted([info.key async for info in archive.store.list("")])


async def _audit_text(archive: Archive) -> str:
    async with archive.db.reader() as session:
        events = (await session.exec(select(AuditEvent))).all()
    return json.dumps([[e.action, e.detail] for e in events])


def _change(reason: str = "customer says", **fields: object) -> rights.Rectification:
    return rights.parse_rectification({"reason": reason, "fields": fields})


# -- rectification ----------------------------------------------------------------------------

def test_a_correction_names_every_bad_field() -> None:
    with pytest.raises(BadRequestError) as caught:
        rights.parse_rectification({"reason": " ", "fields": {
            "caller_number": "not a phone", "customer_email": "nope", "direction": "sideways",
            "tags": "x" * 60, "special_category": None, "started_at": "2026-01-01",
            "customer_postcode": "XYZ"}, "extra": 1})
    assert sorted(e.field for e in caught.value.errors) == [
        "extra", "fields.caller_number", "fields.customer_email", "fields.customer_postcode",
        "fields.direction", "fields.special_category", "fields.started_at", "fields.tags",
        "reason"]


def test_a_correction_normalises_like_ingest() -> None:
    change = _change(caller_number="020 7946 0123", customer_email=" Ann@Example.ORG ",
                     customer_postcode="sw1a1aa", tags=["a", " b "], agent_id=None)
    assert change.changes == {"caller_number": PHONE, "customer_email": "ann@example.org",
                              "customer_postcode": "SW1A 1AA", "tags": ["a", "b"],
                              "agent_id": None}


async def test_versions_keep_every_earlier_state(archive: Archive) -> None:
    item = await _chat(archive)
    await rights.rectify(archive, "camden", item.id, _change("typo", customer_name="Anne Smith"),
                         PRIVACY)
    updated = await rights.rectify(archive, "camden", item.id,
                                   _change("moved", customer_postcode="M1 1AE"), PRIVACY)
    assert updated.customer_name_key == "anne smith"
    versions = await rights.history(archive, updated)
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[0]["fields"]["customer_name"] == NAME
    assert versions[0]["reason"] == "typo" and versions[0]["replaced_by"] == PRIVACY.name
    assert versions[1]["fields"]["customer_name"] == "Anne Smith"
    assert versions[1]["fields"]["customer_postcode"] == POSTCODE
    assert versions[2] == {"version": 3, "current": True, "fields": rights.snapshot(updated)}
    assert versions[2]["fields"]["customer_postcode"] == "M1 1AE"
    with pytest.raises(BadRequestError):  # the same value again changes nothing
        await rights.rectify(archive, "camden", item.id, _change(customer_postcode="m11ae"),
                             PRIVACY)
    with pytest.raises(NotFoundError):
        await rights.rectify(archive, "barnet", item.id, _change(service="x"), PRIVACY)
    audit = await _audit_text(archive)
    assert "item.rectify" in audit and "Anne" not in audit and "M1 1AE" not in audit


async def test_destroy_deletes_the_versions(archive: Archive) -> None:
    item = await _chat(archive)
    await rights.rectify(archive, "camden", item.id, _change(customer_email="a@b.org"),
                         PRIVACY)
    assert len(await _versions(archive, item)) == 1
    await rights.erase(archive, "camden", item.id, PRIVACY)
    assert await _versions(archive, item) == []
    with pytest.raises(ConflictError):
        await rights.rectify(archive, "camden", item.id, _change(service="x"), PRIVACY)


# -- anonymisation ----------------------------------------------------------------------------

async def test_anonymised_chat_is_readable_without_personal_data(archive: Archive) -> None:
    item = await _chat(archive)
    old_key = item.object_key
    await rights.rectify(archive, "camden", item.id, _change(customer_email="a@b.org"),
                         PRIVACY)
    done, record = await rights.anonymise(archive, "camden", item.id, PRIVACY)
    assert record is None and done.status == ItemStatus.ANONYMISED.value
    text = (await read_all(archive.read(done))).decode()
    transcript = Transcript.from_json_bytes(text.encode())
    for value in [*PERSONAL, "Raj", "Patel", "sw1a 1aa", "a@b.org"]:
        assert value not in text
    assert "Council tax band D." in text and "[EMAIL]" in text and "[POSTCODE]" in text
    assert all(m.name is None for m in transcript.messages)
    assert done.object_key != old_key and await _keys(archive) == [done.object_key]
    assert (done.customer_name, done.customer_email, done.customer_postcode, done.tags) == (
        None, None, "SW1A", None)
    assert done.agent_id == "raj" and done.service == "council-tax"
    assert done.sha256 != item.sha256 and done.plain_size == len(text.encode())
    assert await _versions(archive, item) == []
    audit = await _audit_text(archive)
    assert "item.anonymise" in audit and all(v not in audit for v in PERSONAL)
    with pytest.raises(ConflictError):  # once is enough
        await rights.anonymise(archive, "camden", item.id, PRIVACY)


async def test_anonymised_call_keeps_statistics_only(archive: Archive) -> None:
    item = await _call(archive)
    done, record = await rights.anonymise(archive, "camden", item.id, PRIVACY)
    assert record is not None and record.reason == "anonymisation"
    assert done.status == ItemStatus.ANONYMISED.value and done.wrapped_key is None
    assert await _keys(archive) == []
    with pytest.raises(NotFoundError):
        await read_all(archive.read(done))
    assert (done.caller_number, done.called_number, done.extra) == (None, None, None)
    assert done.customer_postcode == "SW1A"
    assert (done.direction, done.agent_id, done.service, done.queue, done.duration) == (
        "inbound", "raj", "housing", "repairs", 42.0)
    assert done.started_at == START and done.ended_at == START + timedelta(seconds=42)
    assert done.plain_size == item.plain_size and done.media_type == "audio/wav"
    with pytest.raises(ConflictError):  # nothing left to erase
        await rights.erase(archive, "camden", item.id, PRIVACY)


async def test_a_held_item_is_not_anonymised(archive: Archive) -> None:
    item = await _chat(archive)
    await _hold(archive, item)
    with pytest.raises(ConflictError, match="C-2026-001"):
        await rights.anonymise(archive, "camden", item.id, PRIVACY)
    same = await archive.get("camden", item.id)
    assert same.status == "active" and same.customer_email == EMAIL
    assert await read_all(archive.read(same)) == _transcript().to_json_bytes()


async def test_a_hold_placed_during_anonymisation_wins(archive: Archive) -> None:
    item = await _chat(archive)
    await _hold(archive, item)  # after the caller checked: replace_content checks again
    with pytest.raises(ConflictError, match="C-2026-001"):
        await archive.replace_content(
            item, media_type="application/json", data=b"{}", fields={},
            status=ItemStatus.ANONYMISED, actor=PRIVACY, action="item.anonymise")
    assert await _keys(archive) == [item.object_key]
    assert await read_all(archive.read(await archive.get("camden", item.id))) == (
        _transcript().to_json_bytes())


async def test_replacing_content_of_a_changed_item_is_refused(archive: Archive) -> None:
    item = await _chat(archive)
    archive.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]
    await rights.rectify(archive, "camden", item.id, _change(service="x"), PRIVACY)
    with pytest.raises(ConflictError, match="changed meanwhile"):
        await archive.replace_content(
            item, media_type="application/json", data=b"{}", fields={},
            status=ItemStatus.ANONYMISED, actor=PRIVACY, action="item.anonymise")
    assert await _keys(archive) == [item.object_key]


async def test_a_store_failure_leaves_the_item_as_it_was(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = await _chat(archive)

    async def broken(*_args: object) -> int:
        raise StoreUnavailableError("down")

    monkeypatch.setattr(archive.store, "put", broken)
    with pytest.raises(Exception, match="unavailable"):
        await rights.anonymise(archive, "camden", item.id, PRIVACY)
    same = await archive.get("camden", item.id)
    assert same.status == "active" and same.wrapped_key == item.wrapped_key
    assert same.customer_name == NAME and await _keys(archive) == [item.object_key]
    assert await read_all(archive.read(same)) == _transcript().to_json_bytes()


# -- erasure and subject access ----------------------------------------------------------------

async def test_bulk_erasure_erases_unheld_and_lists_held(archive: Archive) -> None:
    a = await _call(archive, "call-a")
    b = await _call(archive, "call-b")
    other = await archive.put(
        tenant="camden", channel=Channel.CALL, external_id="call-c", started_at=START,
        media_type="audio/wav", chunks=iter_bytes(b"RIFF"), actor=INGEST,
        fields={"caller_number": "+441632960999"})
    await _hold(archive, b, "C-9")
    result = await rights.erase_matching(archive, "camden", ("caller_number", PHONE), PRIVACY)
    assert [r.item_id for r in result.erased] == [a.id]
    assert result.held == [(b.id, ["C-9"])]
    assert (await archive.get("camden", other.id)).status == "active"
    assert (await archive.get("camden", b.id)).caller_number == PHONE
    async with archive.db.reader() as session:
        records = (await session.exec(select(Destruction))).all()
    assert [r.reason for r in records] == ["erasure"]
    assert "erasure.request" in await _audit_text(archive)


async def test_subject_is_found_by_any_identifier(archive: Archive) -> None:
    chat = await _chat(archive)
    call = await _call(archive)
    await archive.put(tenant="barnet", channel=Channel.CALL, external_id="b", started_at=START,
                      media_type="audio/wav", chunks=iter_bytes(b"RIFF"), actor=INGEST,
                      fields={"caller_number": PHONE})
    for body, expected in [({"caller_number": "020 7946 0123"}, [call.id]),
                           ({"email": "ANN.SMITH@example.org"}, [chat.id]),
                           ({"name": " ann SMITH "}, [chat.id]),
                           ({"postcode": "sw1a1aa"}, [chat.id, call.id]),
                           ({"caller_number": PHONE, "email": EMAIL}, [chat.id, call.id])]:
        found = await rights.find_subject(archive, "camden", rights.parse_subject(body))
        assert sorted(i.id for i in found) == sorted(expected), body
