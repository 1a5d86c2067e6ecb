"""Evidence bundles and subject-access exports: what was asked for, the signed ZIP, its check.

An export records which items were chosen (by id, by the case reference of a legal hold, or by a
search), why and by whom. The bundle is never stored: each download streams a fresh ZIP from the
encrypted store (decrypted in memory, segment by segment) holding, per item, its media in the
format it was kept in, a readable transcript for chats, its metadata and its audit trail, and at
the end ``manifest.json`` (every file's size and SHA-256, the export's purpose, who asked and
when), ``manifest.sig`` (the service's Ed25519 signature of the exact manifest bytes) and
``signing-key.pub``. :func:`verify_bundle` checks all of it.

Items destroyed after the export was made are listed in the manifest with their status and no
files: the bundle shows they existed and were destroyed, and holds nothing of them.
"""

import base64
import binascii
import hashlib
import json
import re
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from archive import audit, signing, waveform
from archive.errors import BadRequestError, FieldError, IntegrityFailureError, NotFoundError
from archive.ids import uuid7
from archive.models import AuditEvent, Channel, Export, Hold, HoldItem, Item, ItemStatus
from archive.search import matching_ids, parse_query
from archive.service import MEDIA, Actor, Archive
from archive.signing import Signer
from archive.zipstream import ZipWriter
from storage.base import iter_bytes

EVIDENCE = "evidence"
SUBJECT_ACCESS = "subject-access"
KINDS = (EVIDENCE, SUBJECT_ACCESS)
MAX_ITEMS = 1000
MAX_PURPOSE = 2000
MAX_CASE_REF = 100
FORMAT = "council-archive-bundle/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "signing-key.pub"
README = "README.txt"
_UNLISTED = {MANIFEST, SIGNATURE, PUBLIC_KEY}  # the files the manifest cannot list
_ORIGINAL = "original"
# Items whose record (and content, where readable) goes in a bundle; purged and erased items
# are listed with their status only.
_LISTED_WITH_FILES = (ItemStatus.ACTIVE.value, ItemStatus.ANONYMISED.value)
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSIONS = {
    "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/x-w64": "w64",
    "audio/mpeg": "mp3", "audio/ogg": "ogg", "audio/flac": "flac", "audio/mp4": "m4a",
    "audio/aac": "aac", "audio/amr": "amr", "audio/aiff": "aiff", "audio/basic": "au",
    "audio/gsm": "gsm", "audio/webm": "webm", "audio/x-matroska": "mka", "audio/x-caf": "caf",
    "audio/x-ms-wma": "wma", "audio/x-wavpack": "wv", "audio/x-voc": "voc",
    "application/json": "json",
}
_README_TEXT = """\
Evidence bundle of the contact-centre archive
=============================================

items/<n>-<external id>/   one folder per call or chat:
    recording.<ext>        a call's audio, in the format the archive kept it in
    original.<ext>         the audio as received, where the archive also kept a rendition
    transcript.json        a chat's transcript as stored
    transcript.txt         the same, readable
    metadata.json          what the archive knows of the item (as at the bundle's making)
    audit.json             every recorded access to and change of the item, oldest first
manifest.json              what was asked for, by whom and why; every file's size and SHA-256
manifest.sig               Ed25519 signature (base64) of the exact bytes of manifest.json
signing-key.pub            the public key (base64) that made manifest.sig

Check it with:  archive verify-bundle BUNDLE.zip --public-key KEY
where KEY is the archive's public key obtained independently (GET /v1/signing-key, or from the
council): the copy inside the bundle shows only that the bundle is intact, not who made it.
"""

ChatText = Callable[[bytes], str]


# -- creating an export -----------------------------------------------------------------------

async def create_export(
    archive: Archive,
    *,
    tenant: str,
    actor: Actor,
    kind: str,
    purpose: str,
    item_ids: Sequence[uuid.UUID] | None = None,
    case_ref: str | None = None,
    query: dict[str, Any] | None = None,
) -> Export:
    """Record an export of the items chosen by exactly one of ``item_ids``, ``case_ref`` (the
    items under active legal holds with that case reference) or ``query`` (a search, as
    ``archive.search.parse_query`` takes it).

    Raises ``BadRequestError`` naming every bad field: no or several selectors, no purpose,
    ids this tenant does not have (another tenant's item is reported like a missing one), a
    case reference that holds nothing, more than ``MAX_ITEMS`` items, or (for an evidence
    export) a selection of no items. A subject-access export may be empty: "we hold nothing
    about you" is an answer too.
    """
    if kind not in KINDS:
        raise ValueError(f"export kind must be one of {KINDS}, not {kind!r}")
    purpose = (purpose or "").strip()
    errors = check_request(purpose, item_ids, case_ref, query)
    if errors:
        raise BadRequestError("the export request has errors", errors=errors)
    if item_ids is not None:
        ids = await _existing_ids(archive, tenant, item_ids)
    elif case_ref is not None:
        ids = await _held_ids(archive, tenant, case_ref.strip())
    else:
        assert query is not None
        try:
            parsed = parse_query(query)
        except BadRequestError as exc:
            raise BadRequestError("the export's query has errors", errors=[
                FieldError(f"query.{e.field}", e.message) for e in exc.errors]) from None
        ids = await matching_ids(archive.db, tenant, parsed, max_items=MAX_ITEMS)
    if not ids and kind == EVIDENCE:
        selector = "item_ids" if item_ids is not None else "case_ref" if case_ref else "query"
        raise BadRequestError(errors=[FieldError(selector, "selects no items")])
    export = Export(
        id=uuid7(), tenant=tenant, kind=kind, purpose=purpose,
        case_ref=case_ref.strip() if case_ref is not None else None, query=query,
        item_ids=[str(i) for i in ids], created_by=actor.name, role=actor.role,
        created_at=archive.clock.now())
    async with archive.db.session() as session:
        session.add(export)
        await audit.append(session, tenant=tenant, at=export.created_at, actor=actor.name,
                           role=actor.role, action="export.create",
                           detail={"export_id": str(export.id), "kind": kind,
                                   "items": len(ids)})
        await session.commit()
    return export


def check_request(purpose: str, item_ids: Sequence[uuid.UUID] | None, case_ref: str | None,
                   query: dict[str, Any] | None) -> list[FieldError]:
    errors = []
    if not purpose:
        errors.append(FieldError("purpose", "is required: say why the export is made"))
    elif len(purpose) > MAX_PURPOSE:
        errors.append(FieldError("purpose", f"is longer than {MAX_PURPOSE} characters"))
    given = {name: value for name, value in
             (("item_ids", item_ids), ("case_ref", case_ref), ("query", query))
             if value is not None}
    if len(given) != 1:
        problem = "give exactly one of item_ids, case_ref or query" + (
            f" (got {len(given)})" if given else "")
        errors += [FieldError(name, problem) for name in (given or ("item_ids", "case_ref",
                                                                     "query"))]
        return errors
    if item_ids is not None:
        if not item_ids:
            errors.append(FieldError("item_ids", "is empty"))
        elif len(set(item_ids)) > MAX_ITEMS:
            errors.append(FieldError("item_ids", f"has more than {MAX_ITEMS} items"))
    if case_ref is not None and not (0 < len(case_ref.strip()) <= MAX_CASE_REF):
        errors.append(FieldError("case_ref", f"must be 1 to {MAX_CASE_REF} characters"))
    return errors


async def _existing_ids(archive: Archive, tenant: str,
                        item_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    wanted = list(dict.fromkeys(item_ids))  # in the order given, once each
    async with archive.db.reader() as session:
        found = set((await session.exec(
            select(Item.id).where(col(Item.id).in_(wanted), Item.tenant == tenant,
                                  Item.status != ItemStatus.PENDING.value))).all())
    missing = [FieldError(f"item_ids[{n}]", f"no item {i} in this tenant")
               for n, i in enumerate(item_ids) if i not in found]
    if missing:
        raise BadRequestError("some items do not exist", errors=missing)
    return wanted


async def _held_ids(archive: Archive, tenant: str, case_ref: str) -> list[uuid.UUID]:
    stmt = (select(Item.id, Item.started_at)
            .join(HoldItem, col(HoldItem.item_id) == col(Item.id))
            .join(Hold, col(Hold.id) == col(HoldItem.hold_id))
            .where(Hold.tenant == tenant, Hold.case_ref == case_ref, Hold.status == "active",
                   Item.tenant == tenant, Item.status != ItemStatus.PENDING.value)
            .distinct().order_by(col(Item.started_at), col(Item.id))
            .limit(MAX_ITEMS + 1))
    async with archive.db.reader() as session:
        ids = [row[0] for row in (await session.exec(stmt)).all()]
    if not ids:
        raise BadRequestError(errors=[FieldError(
            "case_ref", "no active legal hold with this case reference holds any items")])
    if len(ids) > MAX_ITEMS:
        raise BadRequestError(errors=[FieldError(
            "case_ref", f"holds more than {MAX_ITEMS} items; export them by item_ids in parts")])
    return ids


async def get_export(archive: Archive, tenant: str, export_id: uuid.UUID) -> Export:
    """The export if ``tenant`` made it; ``NotFoundError`` otherwise."""
    async with archive.db.reader() as session:
        export = await session.get(Export, export_id)
    if export is None or export.tenant != tenant:
        raise NotFoundError(f"no export {export_id}")
    return export


def export_json(export: Export) -> dict[str, Any]:
    """The export's record, as the API shows it and the manifest states it."""
    return {
        "id": str(export.id), "tenant": export.tenant, "kind": export.kind,
        "purpose": export.purpose, "case_ref": export.case_ref, "query": export.query,
        "item_ids": export.item_ids, "item_count": len(export.item_ids),
        "requested_by": export.created_by, "role": export.role,
        "created_at": export.created_at.isoformat(),
    }


async def record_download(archive: Archive, export: Export, actor: Actor,
                          purpose: str = "") -> None:
    """Audit a download before it starts: ``export.download`` once and ``item.export`` for
    each item whose content goes out (one transaction)."""
    ids = [uuid.UUID(i) for i in export.item_ids]
    async with archive.db.reader() as session:
        live = set((await session.exec(select(Item.id).where(
            col(Item.id).in_(ids), Item.tenant == export.tenant,
            col(Item.status).in_(_LISTED_WITH_FILES)))).all()) if ids else set()
    now = archive.clock.now()
    base = {"export_id": str(export.id)}
    if purpose:
        base["purpose"] = purpose
    async with archive.db.session() as session:
        await audit.append(session, tenant=export.tenant, at=now, actor=actor.name,
                           role=actor.role, action="export.download",
                           detail={**base, "kind": export.kind, "items": len(ids)})
        for item_id in ids:
            if item_id in live:
                await audit.append(session, tenant=export.tenant, at=now, actor=actor.name,
                                   role=actor.role, action="item.export", item_id=item_id,
                                   detail=base)
        await session.commit()


# -- listing and reading exports (for the staff pages) ----------------------------------------

DEFAULT_EXPORTS_PAGE = 50


@dataclass(frozen=True)
class ExportPage:
    """A page of a tenant's exports, newest first."""

    exports: list[Export]
    next_cursor: str | None  # the id of the last export of this page; None on the last page


async def list_exports(archive: Archive, tenant: str, *, kinds: Sequence[str] | None = None,
                       limit: int = DEFAULT_EXPORTS_PAGE,
                       cursor: str | None = None) -> ExportPage:
    """The tenant's exports, newest first, optionally only of some ``kinds``. The cursor is
    the id of the last export of the previous page (``BadRequestError`` naming ``cursor`` if
    it is not one of this tenant's)."""
    if not 1 <= limit <= MAX_ITEMS:
        raise BadRequestError(errors=[FieldError("limit", f"must be 1 to {MAX_ITEMS}")])
    where: list[Any] = [Export.tenant == tenant]
    if kinds is not None:
        where.append(col(Export.kind).in_(list(kinds)))
    async with archive.db.reader() as session:
        if cursor:
            try:
                after = uuid.UUID(cursor)
            except ValueError:
                after = None
            last = await session.get(Export, after) if after is not None else None
            if last is None or last.tenant != tenant:
                raise BadRequestError("the cursor is not valid", errors=[
                    FieldError("cursor", "is not a cursor from a previous page")])
            where.append(sa.or_(col(Export.created_at) < last.created_at,
                                sa.and_(col(Export.created_at) == last.created_at,
                                        col(Export.id) < last.id)))
        rows = list((await session.exec(
            select(Export).where(*where)
            .order_by(col(Export.created_at).desc(), col(Export.id).desc())
            .limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return ExportPage(rows, str(rows[-1].id) if more else None)


async def find_items(archive: Archive, tenant: str,
                     item_ids: Sequence[uuid.UUID]) -> list[Item]:
    """The tenant's items (not pending) among ``item_ids``, in the order given, once each;
    ids of other tenants or of no item are left out."""
    wanted = list(dict.fromkeys(item_ids))
    if not wanted:
        return []
    found: dict[uuid.UUID, Item] = {}
    async with archive.db.reader() as session:
        for start in range(0, len(wanted), MAX_ITEMS):
            rows = (await session.exec(select(Item).where(
                col(Item.id).in_(wanted[start:start + MAX_ITEMS]), Item.tenant == tenant,
                Item.status != ItemStatus.PENDING.value))).all()
            found.update({item.id: item for item in rows})
    return [found[i] for i in wanted if i in found]


# -- the bundle --------------------------------------------------------------------------------

def media_extension(media_type: str | None) -> str:
    """A file extension (no dot) for a stored object's media type."""
    if not media_type:
        return "bin"
    base, _, params = media_type.partition(";")
    base = base.strip().lower()
    if base == "audio/ogg" and "opus" in params.lower():
        return "opus"
    return _EXTENSIONS.get(base, "bin")


def safe_name(external_id: str) -> str:
    """A folder-name form of a producer's id: letters, digits, '.', '_', '-' only."""
    return _SAFE.sub("_", external_id).strip("._")[:80] or "item"


def item_record(item: Item, holds: list[str]) -> dict[str, Any]:
    """An item's metadata.json: what the archive knows of it when the bundle is made."""
    return {
        "id": str(item.id), "tenant": item.tenant, "channel": item.channel,
        "external_id": item.external_id, "status": item.status,
        "started_at": item.started_at.isoformat(),
        "ended_at": item.ended_at.isoformat() if item.ended_at else None,
        "duration": item.duration, "direction": item.direction,
        "caller_number": item.caller_number, "called_number": item.called_number,
        "agent_id": item.agent_id, "agent_extension": item.agent_extension,
        "service": item.service, "queue": item.queue,
        "customer": {"name": item.customer_name, "email": item.customer_email,
                     "postcode": item.customer_postcode},
        "special_category": item.special_category, "tags": item.tags or [],
        "extra": item.extra,
        "media": {"type": item.media_type, "size": item.plain_size, "sha256": item.sha256,
                  **(item.media or {})},
        "objects": {kind: {k: v for k, v in facts.items()
                           if k in {"media_type", "size", "sha256"}}
                    for kind, facts in (item.objects or {}).items()
                    if kind != waveform.KIND},  # a picture drawn on viewing: not evidence
        "source": {"size": item.source_size, "sha256": item.source_sha256},
        "retention": {"retain_until": item.retain_until.isoformat() if item.retain_until
                      else None, "basis": item.retention_basis},
        "holds": holds,
        "created_at": item.created_at.isoformat(),
        "updated_at": item.updated_at.isoformat(),
    }


def _event_json(event: AuditEvent) -> dict[str, Any]:
    return {"seq": event.seq, "at": event.at.isoformat(), "actor": event.actor,
            "role": event.role, "action": event.action, "detail": event.detail,
            "hash": event.hash, "prev_hash": event.prev_hash}


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8") + b"\n"


async def _load_items(archive: Archive, export: Export) -> dict[str, Item]:
    ids = [uuid.UUID(i) for i in export.item_ids]
    if not ids:
        return {}
    async with archive.db.reader() as session:
        rows = (await session.exec(select(Item).where(
            col(Item.id).in_(ids), Item.tenant == export.tenant))).all()
    return {str(item.id): item for item in rows}


async def _item_files(
    archive: Archive, item: Item, folder: str, zw: ZipWriter, chat_text: ChatText
) -> AsyncIterator[bytes]:
    """The files of one item's folder, each checked against the hash taken at ingest."""
    # An anonymised chat keeps a redacted transcript; an anonymised call keeps no audio.
    readable = (item.status in _LISTED_WITH_FILES and item.wrapped_key is not None
                and item.plain_size is not None)
    if readable and item.channel == Channel.CHAT.value:
        data = b"".join([chunk async for chunk in archive.read(item)])
        _check_hash(item, data_sha=hashlib.sha256(data).hexdigest(), expected=item.sha256)
        async for piece in zw.add(f"{folder}transcript.json", iter_bytes(data)):
            yield piece
        text = chat_text(data).encode("utf-8")
        async for piece in zw.add(f"{folder}transcript.txt", iter_bytes(text)):
            yield piece
    elif readable:
        objects = [(MEDIA, f"recording.{media_extension(item.media_type)}", item.sha256)]
        original = (item.objects or {}).get(_ORIGINAL)
        if original:
            objects.append((_ORIGINAL, f"original.{media_extension(original.get('media_type'))}",
                            original.get("sha256")))
        for kind, name, expected in objects:
            async for piece in zw.add(folder + name, archive.read(item, kind=kind)):
                yield piece
            _check_hash(item, data_sha=zw.entries[-1].sha256, expected=expected)
    async with archive.db.reader() as session:
        events = (await session.exec(
            select(AuditEvent).where(AuditEvent.tenant == item.tenant,
                                     AuditEvent.item_id == item.id)
            .order_by(col(AuditEvent.seq)))).all()
    holds = await archive.active_holds(item.tenant, item.id)
    async for piece in zw.add(f"{folder}metadata.json",
                              iter_bytes(_json_bytes(item_record(item, holds)))):
        yield piece
    async for piece in zw.add(f"{folder}audit.json",
                              iter_bytes(_json_bytes([_event_json(e) for e in events]))):
        yield piece


def _check_hash(item: Item, *, data_sha: str, expected: str | None) -> None:
    """Stop the bundle (the client gets a broken download) rather than hand over content whose
    hash differs from the one recorded at ingest."""
    if expected and data_sha != expected:
        raise IntegrityFailureError(f"item {item.id} does not match its ingest hash")


async def bundle(archive: Archive, export: Export, signer: Signer, *,
                 chat_text: ChatText) -> AsyncIterator[bytes]:
    """Stream the export's ZIP. ``chat_text`` renders a stored chat transcript (JSON bytes) as
    readable text (``archive`` does not import ``ingest``, which owns the format)."""
    generated_at = archive.clock.now()
    zw = ZipWriter(generated_at.astimezone(UTC))
    items = await _load_items(archive, export)
    width = len(str(len(export.item_ids)))
    listed: list[dict[str, Any]] = []
    async for piece in zw.add(README, iter_bytes(_README_TEXT.encode("utf-8"))):
        yield piece
    for n, item_id in enumerate(export.item_ids, start=1):
        item = items.get(item_id)
        if item is None:  # cannot happen for rows are never deleted; say so if it does
            listed.append({"id": item_id, "external_id": None, "channel": None,
                           "status": "missing", "folder": None})
            continue
        folder = None
        if item.status in _LISTED_WITH_FILES:
            folder = f"items/{n:0{width}d}-{safe_name(item.external_id)}/"
            async for piece in _item_files(archive, item, folder, zw, chat_text):
                yield piece
        listed.append({"id": item_id, "external_id": item.external_id,
                       "channel": item.channel, "status": item.status, "folder": folder})
    record = export_json(export)
    manifest = {
        "format": FORMAT,
        "export": {k: record[k] for k in ("id", "tenant", "kind", "purpose", "case_ref",
                                          "requested_by", "role", "created_at")},
        "generated_at": generated_at.isoformat(),
        "files": [{"path": e.name, "size": e.size, "sha256": e.sha256} for e in zw.entries],
        "items": listed,
        "signature": {"algorithm": signing.ALGORITHM, "key_id": signer.key_id,
                      "file": SIGNATURE, "public_key_file": PUBLIC_KEY},
    }
    manifest_bytes = _json_bytes(manifest)
    signature = base64.b64encode(signer.sign(manifest_bytes)) + b"\n"
    for name, data in ((MANIFEST, manifest_bytes), (SIGNATURE, signature),
                       (PUBLIC_KEY, signer.public_key_b64.encode("ascii") + b"\n")):
        async for piece in zw.add(name, iter_bytes(data)):
            yield piece
    yield zw.finish()


# -- verification ------------------------------------------------------------------------------

@dataclass
class BundleReport:
    """What :func:`check_bundle` found."""

    problems: list[str] = field(default_factory=list)
    files: int = 0  # files listed in the manifest
    key_id: str | None = None  # of the key the signature was checked with
    key_from_bundle: bool = False  # that key came from the bundle itself (proves no origin)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_bundle(path: Path, public_key: bytes | None = None) -> list[str]:
    """Every problem found in the bundle at ``path`` (empty: intact and signed by the key).

    Without ``public_key`` the bundle's own ``signing-key.pub`` is used: that shows the bundle
    is intact, but only a key obtained independently shows who made it (see ``check_bundle``).
    """
    return check_bundle(path, public_key).problems


def check_bundle(path: Path, public_key: bytes | None = None) -> BundleReport:
    report = BundleReport()
    try:
        with zipfile.ZipFile(path) as zf:
            _check_zip(zf, public_key, report)
    except (OSError, zipfile.BadZipFile) as exc:
        report.problems.append(f"{path} is not a readable ZIP file: {exc}")
    return report


def _read_member(zf: zipfile.ZipFile, name: str, report: BundleReport) -> bytes | None:
    try:
        return zf.read(name)
    except KeyError:
        return None
    except (zipfile.BadZipFile, OSError) as exc:
        report.problems.append(f"{name} cannot be read: {exc}")
        return None


def _check_zip(zf: zipfile.ZipFile, public_key: bytes | None, report: BundleReport) -> None:
    names = zf.namelist()
    for name in sorted({n for n in names if names.count(n) > 1}):
        report.problems.append(f"{name} appears more than once in the ZIP")
    manifest_bytes = _read_member(zf, MANIFEST, report)
    if manifest_bytes is None:
        report.problems.append(f"{MANIFEST} is missing: nothing can be checked")
        return
    _check_signature(zf, manifest_bytes, public_key, report)
    try:
        manifest = json.loads(manifest_bytes)
        listed = {f["path"]: f for f in manifest["files"]}
        declared_key = manifest.get("signature", {}).get("key_id")
    except (ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"{MANIFEST} is not a bundle manifest: {exc!r}")
        return
    report.files = len(listed)
    if report.key_id and declared_key != report.key_id:
        report.problems.append(
            f"{MANIFEST} names signing key {declared_key}, but was checked with {report.key_id}")
    present = set(names)
    for path, expected in listed.items():
        if path not in present:
            report.problems.append(f"{path} is listed in the manifest but missing")
            continue
        size, digest = _hash_member(zf, path, report)
        if digest is None:
            continue
        if size != expected.get("size"):
            report.problems.append(
                f"{path} is {size} bytes but the manifest says {expected.get('size')}: "
                "it was changed")
        elif digest != expected.get("sha256"):
            report.problems.append(
                f"{path} does not match its SHA-256 in the manifest: it was changed")
    for name in sorted(present - set(listed) - _UNLISTED):
        if not name.endswith("/"):
            report.problems.append(f"{name} is not listed in the manifest: it was added")


def _check_signature(zf: zipfile.ZipFile, manifest_bytes: bytes, public_key: bytes | None,
                     report: BundleReport) -> None:
    if public_key is None:
        raw = _read_member(zf, PUBLIC_KEY, report)
        if raw is None:
            report.problems.append(
                f"{PUBLIC_KEY} is missing and no public key was given: the signature "
                "cannot be checked")
            return
        try:
            public_key = signing.parse_public_key(raw.decode("ascii", "replace"))
        except ValueError as exc:
            report.problems.append(f"{PUBLIC_KEY} is not a public key: {exc}")
            return
        report.key_from_bundle = True
    else:
        raw = _read_member(zf, PUBLIC_KEY, report)
        if raw is not None and raw.strip() != base64.b64encode(public_key):
            report.problems.append(
                f"{PUBLIC_KEY} is not the public key given for the check")
    report.key_id = signing.key_id(public_key)
    sig_text = _read_member(zf, SIGNATURE, report)
    if sig_text is None:
        report.problems.append(f"{SIGNATURE} is missing: the manifest is not signed")
        return
    try:
        signature = base64.b64decode(sig_text.strip(), validate=True)
    except (binascii.Error, ValueError):
        report.problems.append(f"{SIGNATURE} is not a base64 signature")
        return
    if not signing.verify(public_key, manifest_bytes, signature):
        report.problems.append(
            f"the signature in {SIGNATURE} does not match {MANIFEST}: one of them was "
            f"edited, or the bundle was not signed by key {report.key_id}")


def _hash_member(zf: zipfile.ZipFile, name: str,
                 report: BundleReport) -> tuple[int, str | None]:
    hasher, size = hashlib.sha256(), 0
    try:
        with zf.open(name) as f:
            while chunk := f.read(1 << 20):
                hasher.update(chunk)
                size += len(chunk)
    except (zipfile.BadZipFile, OSError) as exc:  # e.g. a CRC that no longer matches
        report.problems.append(f"{name} cannot be read ({exc}): it was changed")
        return size, None
    return size, hasher.hexdigest()
