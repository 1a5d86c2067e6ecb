"""Data-subject rights: rectification with history, erasure (one item or every match of an
identifier), anonymisation and finding a subject's items for subject access.

Every change needs a stated ``reason`` and writes an audit event in the transaction of the
change. Audit details name fields, counts and ids, never values: a rectification's reason is
kept with the replaced version (which is personal data and goes when the item is destroyed);
the reason of an erasure or anonymisation is not kept at all, since it typically names the
person who asked. An optional ``request_ref`` (the reference of the data subject's request in
the council's case system: letters, digits and ``._/-``) links the audit event to the request.
"""

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from archive import audit
from archive.anonymise import anonymise_text, postcode_district
from archive.errors import BadRequestError, ConflictError, FieldError, NotFoundError
from archive.ids import uuid7
from archive.models import Channel, Destruction, Item, ItemStatus, ItemVersion
from archive.service import Actor, Archive
from ingest.metadata import (
    DIRECTIONS,
    choice,
    email,
    normalise_phone,
    normalise_postcode,
    phone,
    postcode,
    tags,
    text,
)
from ingest.transcripts import Message, Transcript
from storage.base import read_all

MAX_REASON = 2000
_REQUEST_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")


def _strict_bool(_name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("must be true or false")
    return value


def _phone_or_none(name: str, value: Any) -> str | None:
    return phone(name, value) or None  # a withheld marker clears the number


# What rectification may correct, and how each value is checked and normalised (as ingest
# does). ``customer_name_key`` follows ``customer_name``.
CORRECTABLE: dict[str, Callable[[str, Any], Any]] = {
    "caller_number": _phone_or_none,
    "called_number": _phone_or_none,
    "customer_name": text(200),
    "customer_email": email,
    "customer_postcode": postcode,
    "agent_id": text(100),
    "agent_extension": text(32),
    "service": text(100),
    "queue": text(100),
    "direction": choice(DIRECTIONS),
    "tags": tags,
    "special_category": _strict_bool,
}
# Fields that null (or "") clears; special_category is always true or false.
_CLEARABLE = frozenset(CORRECTABLE) - {"special_category"}


def reason_errors(body: Mapping[str, Any]) -> list[FieldError]:
    """Errors of the required ``reason`` and the optional ``request_ref`` of a request."""
    errors = []
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        errors.append(FieldError("reason", "is required: say why (a non-empty string)"))
    elif len(reason) > MAX_REASON:
        errors.append(FieldError("reason", f"must be at most {MAX_REASON} characters"))
    ref = body.get("request_ref")
    if ref is not None and (not isinstance(ref, str) or not _REQUEST_REF.match(ref)):
        errors.append(FieldError(
            "request_ref", "must be 1-64 letters, digits and ._/- (a case system reference)"))
    return errors


def _ref_detail(request_ref: str | None) -> dict[str, Any]:
    return {"request_ref": request_ref} if request_ref else {}


def _unknown(body: Mapping[str, Any], allowed: set[str], prefix: str = "") -> list[FieldError]:
    return [FieldError(prefix + name, "is not a known field")
            for name in sorted(set(body) - allowed, key=str)]


# -- rectification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rectification:
    reason: str
    changes: dict[str, Any]  # stored forms, by field name
    request_ref: str | None = None


def parse_rectification(body: Mapping[str, Any]) -> Rectification:
    """``{"reason", "fields": {...}, "request_ref"?}``; raises naming every bad field."""
    errors = _unknown(body, {"reason", "fields", "request_ref"}) + reason_errors(body)
    fields = body.get("fields")
    changes: dict[str, Any] = {}
    if not isinstance(fields, Mapping) or not fields:
        errors.append(FieldError("fields", "is required: an object of the fields to correct"))
    else:
        errors += _unknown(fields, set(CORRECTABLE), "fields.")
        for name, parse in CORRECTABLE.items():
            if name not in fields:
                continue
            value = fields[name]
            if value is None or value == "":
                if name in _CLEARABLE:
                    changes[name] = None
                else:
                    errors.append(FieldError(f"fields.{name}", "must be true or false"))
                continue
            try:
                changes[name] = parse(name, value)
            except (TypeError, ValueError) as exc:
                errors.append(FieldError(f"fields.{name}", str(exc)))
    if errors:
        raise BadRequestError("the correction has errors", errors=errors)
    return Rectification(str(body["reason"]).strip(), changes, body.get("request_ref"))


def snapshot(item: Item) -> dict[str, Any]:
    """The correctable fields of an item as they stand (JSON-ready)."""
    return {name: (list(value) if isinstance(value := getattr(item, name), list) else value)
            for name in CORRECTABLE}


async def _locked_item(session: Any, tenant: str, item_id: uuid.UUID) -> Item:
    item: Item | None = (await session.exec(
        select(Item).where(Item.id == item_id).with_for_update())).first()
    if item is None or item.tenant != tenant or item.status == ItemStatus.PENDING.value:
        raise NotFoundError(f"no item {item_id}")
    return item


async def rectify(archive: Archive, tenant: str, item_id: uuid.UUID, change: Rectification,
                  actor: Actor) -> Item:
    """Correct an item's metadata, keeping what it replaces as a version (one transaction).

    The first correction stores the item as ingested as version 1; each stores the state it
    replaces, with the reason, who and when. The item itself is the latest version.
    """
    now = archive.clock.now()
    async with archive.db.session() as session:
        item = await _locked_item(session, tenant, item_id)
        if item.status != ItemStatus.ACTIVE.value:
            raise ConflictError(f"item {item_id} is {item.status}: there is nothing to correct")
        changed = {k: v for k, v in change.changes.items() if getattr(item, k) != v}
        if not changed:
            raise BadRequestError(errors=[FieldError(
                "fields", "changes nothing: every value given is the item's current one")])
        last = (await session.exec(
            select(sa.func.max(ItemVersion.version)).where(ItemVersion.item_id == item.id)
        )).one()
        number = int(last or 0) + 1
        session.add(ItemVersion(
            id=uuid7(), item_id=item.id, tenant=tenant, version=number, fields=snapshot(item),
            reason=change.reason, replaced_by=actor.name, replaced_at=now))
        for name, value in changed.items():
            setattr(item, name, value)
        if "customer_name" in changed:
            item.customer_name_key = item.customer_name.casefold() if item.customer_name else None
        item.updated_at = now
        session.add(item)
        await audit.append(session, tenant=tenant, at=now, actor=actor.name, role=actor.role,
                           action="item.rectify", item_id=item.id,
                           detail={"fields": sorted(changed), "version": number + 1,
                                   **_ref_detail(change.request_ref)})
        await session.commit()
    return item


async def history(archive: Archive, item: Item) -> list[dict[str, Any]]:
    """The item's versions, oldest first, ending with the current one."""
    async with archive.db.reader() as session:
        versions = (await session.exec(
            select(ItemVersion).where(ItemVersion.item_id == item.id)
            .order_by(col(ItemVersion.version)))).all()
    answer: list[dict[str, Any]] = [
        {"version": v.version, "fields": v.fields, "reason": v.reason,
         "replaced_by": v.replaced_by,
         "replaced_at": v.replaced_at.isoformat() if v.replaced_at else None}
        for v in versions]
    current = versions[-1].version + 1 if versions else 1
    answer.append({"version": current, "current": True, "fields": snapshot(item)})
    return answer


# -- erasure ----------------------------------------------------------------------------------


def destruction_json(record: Destruction) -> dict[str, Any]:
    return {"id": str(record.id), "item_id": str(record.item_id), "channel": record.channel,
            "reason": record.reason, "destroyed_at": record.destroyed_at.isoformat(),
            "stored_sha256": record.stored_sha256, "actor": record.actor}


async def erase(archive: Archive, tenant: str, item_id: uuid.UUID, actor: Actor,
                request_ref: str | None = None) -> Destruction:
    """Crypto-shred one item now (``Archive.destroy``); 409 naming the case references while
    it is held, or when it was already destroyed."""
    return await archive.destroy(tenant, item_id, reason="erasure", actor=actor,
                                 status=ItemStatus.ERASED, action="item.erase",
                                 detail=_ref_detail(request_ref))


@dataclass(frozen=True)
class BulkErasure:
    erased: list[Destruction]
    held: list[tuple[uuid.UUID, list[str]]]  # item id, case references


ERASURE_IDENTIFIERS = ("caller_number", "email")


def parse_identifier(body: Mapping[str, Any]) -> tuple[str, str]:
    """Exactly one of ``caller_number`` (any notation) or ``email``, in its stored form."""
    errors = _unknown(body, {*ERASURE_IDENTIFIERS, "reason", "request_ref"})
    errors += reason_errors(body)
    given = [name for name in ERASURE_IDENTIFIERS if body.get(name) not in (None, "")]
    stored: str | None = None
    if len(given) != 1:
        errors += [FieldError(name, "give exactly one of caller_number, email")
                   for name in (given or ERASURE_IDENTIFIERS)]
    else:
        value = body[given[0]]
        if isinstance(value, str):
            stored = (normalise_phone(value) if given[0] == "caller_number"
                      else _email_or_none(value))
        if stored is None:
            what = "a phone number" if given[0] == "caller_number" else "an email address"
            errors.append(FieldError(given[0], f"is not {what}"))
    if errors or stored is None:
        raise BadRequestError("the erasure request has errors", errors=errors)
    return given[0], stored


def _email_or_none(value: str) -> str | None:
    try:
        return email("email", value)
    except (TypeError, ValueError):
        return None


async def erase_matching(archive: Archive, tenant: str, identifier: tuple[str, str],
                         actor: Actor, request_ref: str | None = None) -> BulkErasure:
    """Erase every active or anonymised item of either channel matching ``identifier``
    (``caller_number`` matches the caller or the called number); held ones are listed.

    Each item is destroyed in its own transaction (as ``erase``), so a failure part-way leaves
    the ones done destroyed and the request can be repeated for the rest. One further event,
    ``erasure.request``, records the counts (never the identifier).
    """
    name, value = identifier
    match = (sa.or_(col(Item.caller_number) == value, col(Item.called_number) == value)
             if name == "caller_number" else col(Item.customer_email) == value)
    async with archive.db.reader() as session:
        ids = (await session.exec(
            select(Item.id).where(
                Item.tenant == tenant, match,
                col(Item.status).in_([ItemStatus.ACTIVE.value, ItemStatus.ANONYMISED.value]))
            .order_by(col(Item.started_at), col(Item.id)))).all()
    erased: list[Destruction] = []
    held: list[tuple[uuid.UUID, list[str]]] = []
    for item_id in ids:
        refs = await archive.active_holds(tenant, item_id)
        if not refs:
            try:
                erased.append(await erase(archive, tenant, item_id, actor, request_ref))
                continue
            except ConflictError:  # held or destroyed meanwhile
                refs = await archive.active_holds(tenant, item_id)
        if refs:
            held.append((item_id, refs))
    async with archive.db.session() as session:
        await audit.append(session, tenant=tenant, at=archive.clock.now(), actor=actor.name,
                           role=actor.role, action="erasure.request",
                           detail={"identifier": name, "erased": len(erased),
                                   "held": len(held), **_ref_detail(request_ref)})
        await session.commit()
    return BulkErasure(erased, held)


# -- anonymisation ----------------------------------------------------------------------------

# Metadata that identifies the customer; an anonymised item keeps none of it (the postcode is
# cut to its district).
_ANONYMISED_FIELDS = ("caller_number", "called_number", "customer_name", "customer_name_key",
                      "customer_email", "tags", "extra")


def _reduced(item: Item) -> dict[str, Any]:
    return {**dict.fromkeys(_ANONYMISED_FIELDS),
            "customer_postcode": postcode_district(item.customer_postcode)}


def anonymise_transcript(transcript: Transcript, extra_names: Sequence[str] = ()) -> Transcript:
    """Each message's text anonymised, with the customer's and agents' names (from the
    messages and ``extra_names``) replaced; names become role labels (agents numbered when
    there were several)."""
    people = [m.name for m in transcript.messages
              if m.name and m.sender in ("customer", "agent")]
    names = [*people, *(n for n in extra_names if n)]
    agents = list(dict.fromkeys(m.name for m in transcript.messages
                                if m.sender == "agent" and m.name))

    def label(message: Message) -> str | None:
        if message.sender == "agent" and len(agents) > 1 and message.name:
            return f"Agent {agents.index(message.name) + 1}"
        return None

    return Transcript(
        messages=tuple(Message(at=m.at, sender=m.sender, name=label(m),
                               text=anonymise_text(m.text, names))
                       for m in transcript.messages),
        redactions=transcript.redactions)


async def anonymise(archive: Archive, tenant: str, item_id: uuid.UUID, actor: Actor,
                    request_ref: str | None = None) -> tuple[Item, Destruction | None]:
    """Anonymise one item: a chat keeps its transcript with personal data replaced by
    placeholders (re-encrypted under a new key, the old object deleted); a call's audio is
    destroyed (a voice identifies its speaker) and it keeps only non-identifying metadata.
    Either way the customer's identifiers go, the postcode is cut to its district, earlier
    versions are deleted and the item becomes ``anonymised``. 409 while held."""
    item = await archive.get(tenant, item_id)
    if item.status != ItemStatus.ACTIVE.value:
        raise ConflictError(f"item {item_id} is {item.status}: it cannot be anonymised")
    held = await archive.active_holds(tenant, item_id)
    if held:
        raise ConflictError(f"item {item_id} is under legal hold for case(s) {', '.join(held)}")
    detail = {"channel": item.channel, **_ref_detail(request_ref)}
    if item.channel == Channel.CALL.value:
        record = await archive.destroy(
            tenant, item_id, reason="anonymisation", actor=actor, status=ItemStatus.ANONYMISED,
            action="item.anonymise", keep=_reduced, detail=detail)
        return await archive.get(tenant, item_id), record
    transcript = Transcript.from_json_bytes(await read_all(archive.read(item)))
    cleaned = anonymise_transcript(transcript, [item.customer_name or ""])
    updated = await archive.replace_content(
        item, media_type=item.media_type or "application/json", data=cleaned.to_json_bytes(),
        fields=_reduced(item), status=ItemStatus.ANONYMISED, actor=actor,
        action="item.anonymise", detail={**detail, "messages": len(cleaned.messages)})
    return updated, None


# -- subject access ---------------------------------------------------------------------------

SUBJECT_IDENTIFIERS = ("caller_number", "email", "name", "postcode")


@dataclass(frozen=True)
class Subject:
    """A data subject's identifiers, in stored form; any one matching selects an item."""

    caller_number: str | None = None
    email: str | None = None
    name: str | None = None  # case-folded
    postcode: str | None = None
    purpose: str = "subject access request"

    def given(self) -> list[str]:
        return [n for n in SUBJECT_IDENTIFIERS if getattr(self, n) is not None]


def parse_subject(body: Mapping[str, Any]) -> Subject:
    errors = _unknown(body, {*SUBJECT_IDENTIFIERS, "purpose"})
    values: dict[str, str | None] = {}
    for name in SUBJECT_IDENTIFIERS:
        raw = body.get(name)
        if raw is None or raw == "":
            values[name] = None
            continue
        if not isinstance(raw, str):
            errors.append(FieldError(name, "must be a string"))
            continue
        stored = {"caller_number": normalise_phone, "email": _email_or_none,
                  "postcode": normalise_postcode, "name": _name_key}[name](raw)
        if stored is None:
            errors.append(FieldError(name, f"is not a valid {name.replace('_', ' ')}"))
        values[name] = stored
    if not errors and not any(values.values()):
        errors.append(FieldError(
            "caller_number", "give at least one of caller_number, email, name, postcode"))
    purpose = body.get("purpose", "subject access request")
    if not isinstance(purpose, str) or not purpose.strip() or len(purpose) > MAX_REASON:
        errors.append(FieldError("purpose", f"must be text of 1-{MAX_REASON} characters"))
    if errors:
        raise BadRequestError("the request has errors", errors=errors)
    return Subject(**values, purpose=str(purpose).strip())


def _name_key(value: str) -> str | None:
    """As ingest keys a name: stripped and case-folded."""
    name = value.strip()
    return name.casefold() if 0 < len(name) <= 200 else None


async def find_subject(archive: Archive, tenant: str, subject: Subject) -> list[Item]:
    """Active and anonymised items of both channels matching any of the identifiers, oldest
    first (destroyed items hold nothing to give)."""
    conditions = []
    if subject.caller_number:
        conditions += [col(Item.caller_number) == subject.caller_number,
                       col(Item.called_number) == subject.caller_number]
    if subject.email:
        conditions.append(col(Item.customer_email) == subject.email)
    if subject.name:
        conditions.append(col(Item.customer_name_key) == subject.name)
    if subject.postcode:
        conditions.append(col(Item.customer_postcode) == subject.postcode)
    async with archive.db.reader() as session:
        return list((await session.exec(
            select(Item).where(
                Item.tenant == tenant, sa.or_(*conditions),
                col(Item.status).in_([ItemStatus.ACTIVE.value, ItemStatus.ANONYMISED.value]))
            .order_by(col(Item.started_at), col(Item.id)))).all())
