"""The Archive service: puts and gets items, keeping the index and the encrypted store together.

The path of a put (DESIGN.md): write the item row as ``pending`` with a fresh wrapped data key,
stream the encrypted object to the store, then mark the row ``active`` with its size and SHA-256
and append an audit event. Any failure on the way (including cancellation, e.g. a client that
disconnects) removes the object and the row; a crash leaves a ``pending`` row that the sweeper
removes. Readers never see a ``pending`` item.
"""

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlmodel import col, select

from archive import audit, deletions, retention
from archive.clock import Clock
from archive.db import Database, tenant_lock
from archive.errors import (
    ArchiveError,
    ConflictError,
    InsufficientStorageError,
    IntegrityFailureError,
    NotFoundError,
    UnavailableError,
)
from archive.ids import uuid7
from archive.models import (
    PERSONAL_FIELDS,
    Channel,
    Destruction,
    Hold,
    HoldItem,
    Item,
    ItemStatus,
    ItemVersion,
    Tenant,
)
from archive.reviews import delete_reviews
from archive.search import live_holds_matching
from storage import crypto
from storage.base import BlobStore, iter_bytes
from storage.errors import (
    BlobNotFoundError,
    IntegrityError,
    KeyringError,
    StorageError,
    StoreFullError,
    StoreUnavailableError,
)
from storage.keyring import KeyProvider, WrappedKey

log = logging.getLogger(__name__)

# Optional item columns a producer may set; everything else is the service's to fill in.
ITEM_FIELDS = frozenset({
    "ended_at", "duration", "direction", "caller_number", "called_number", "agent_id",
    "agent_extension", "service", "queue", "customer_name", "customer_name_key", "customer_email",
    "customer_postcode", "special_category", "tags", "extra", "media",
})
# Fields only the writer sets, from what it learns while storing.
WRITER_FIELDS = frozenset({"source_sha256", "source_size", "content_hash", "retain_until",
                           "retention_basis"})
REWRAP_BATCH = 500
LIVE_HOLD = "live query"  # added_by of an item a query hold took on arrival


def translate_storage_error(exc: StorageError) -> ArchiveError:
    """Map a storage error to what the archive reports (the provider detail stays in logs)."""
    if isinstance(exc, StoreFullError):
        return InsufficientStorageError()
    if isinstance(exc, IntegrityError | BlobNotFoundError):
        return IntegrityFailureError()
    if isinstance(exc, StoreUnavailableError):
        return UnavailableError("the object store is unavailable")
    if isinstance(exc, KeyringError):
        return UnavailableError("the keyring could not provide the item's key")
    return UnavailableError("the object store failed")


def object_key(tenant: str, channel: str, started_at: datetime, item_id: uuid.UUID) -> str:
    """``{tenant}/{channel}/{yyyy}/{mm}/{dd}/{item_id}``: no personal data in keys."""
    day = started_at.astimezone(UTC)
    return f"{tenant}/{channel}/{day:%Y/%m/%d}/{item_id}"


MEDIA = "media"  # the object that is played or shown; further kinds live in Item.objects


def object_key_of(item: Item, kind: str) -> str:
    """Where an object of the item is stored: its media at ``item.object_key``, others beside
    it with the kind as suffix, or at the key their entry in ``Item.objects`` names (an object
    added to an active item: see ``Archive.add_object``)."""
    assert item.object_key is not None
    if kind == MEDIA:
        return item.object_key
    at = (item.objects or {}).get(kind, {}).get("object_key")
    return at if isinstance(at, str) else f"{item.object_key}.{kind}"


def object_keys(item: Item) -> list[str]:
    """The keys of every object the item has (its media and the further kinds)."""
    return [object_key_of(item, k) for k in sorted({MEDIA, *(item.objects or {})})]


def check_fields(fields: Mapping[str, Any]) -> None:
    unknown = set(fields) - ITEM_FIELDS
    if unknown:
        raise ValueError(f"not item fields: {sorted(unknown)}")


class DuplicateItemError(ConflictError):
    """An item with this external id already exists."""

    def __init__(self, existing: Item) -> None:
        super().__init__(f"an item with external_id {existing.external_id!r} already exists")
        self.existing = existing


@dataclass(frozen=True, slots=True)
class Actor:
    """Who does something, as the audit log records it."""

    name: str
    role: str


SYSTEM = Actor("system", "system")


class ItemWriter:
    """Stores the objects of one pending item (see ``Archive.writer``)."""

    def __init__(self, archive: "Archive", item: Item, tenant: Tenant, data_key: bytes) -> None:
        self.archive = archive
        self.item = item
        self.tenant = tenant  # as read when the item was inserted: its policies apply to it
        self._data_key = data_key
        self.kinds: set[str] = set()

    async def store(self, kind: str, media_type: str, chunks: AsyncIterator[bytes]) -> None:
        """Encrypt and store one object of the item, recording its size and SHA-256.
        Objects of different kinds may be stored concurrently."""
        if kind in self.kinds:
            raise ValueError(f"object {kind!r} stored twice")
        self.kinds.add(kind)
        size, digest = await self.archive._store_object(self.item, self._data_key, kind, chunks)
        stored = crypto.ciphertext_size(size, self.archive.segment_size)
        if kind == MEDIA:
            self.item.media_type = media_type
            self.item.plain_size, self.item.sha256, self.item.stored_size = size, digest, stored
        else:
            self.item.objects = {**(self.item.objects or {}), kind: {
                "media_type": media_type, "size": size, "stored_size": stored,
                "sha256": digest}}

    def describe(self, kind: str, media_type: str) -> None:
        """Name an object's media type once it is known (after a probe of what was stored)."""
        if kind == MEDIA:
            self.item.media_type = media_type
        else:
            objects = dict(self.item.objects or {})
            objects[kind] = {**objects[kind], "media_type": media_type}
            self.item.objects = objects

    def set(self, **fields: Any) -> None:
        """Set item fields learnt while storing (media facts, duration, source hash...)."""
        check_fields({k: v for k, v in fields.items() if k not in WRITER_FIELDS})
        for name, value in fields.items():
            setattr(self.item, name, value)


class Archive:
    """Index plus encrypted store, behind one interface for ingest, retrieval and lifecycle."""

    def __init__(
        self,
        db: Database,
        store: BlobStore,
        keys: KeyProvider,
        clock: Clock,
        segment_size: int = crypto.DEFAULT_SEGMENT_SIZE,
        *,
        windows: retention.Windows | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.keys = keys
        self.clock = clock
        self.segment_size = segment_size
        self.windows = windows or retention.Windows()

    # -- writing -------------------------------------------------------------------------------

    @asynccontextmanager
    async def writer(
        self,
        *,
        tenant: str,
        channel: Channel,
        external_id: str,
        started_at: datetime,
        actor: Actor,
        fields: Mapping[str, Any] | None = None,
    ) -> AsyncIterator["ItemWriter"]:
        """Write one item whole, or nothing (see the module docstring).

        Inside the block, store the item's objects (``media`` is required) and set fields
        learnt while storing (duration, codec...); on leaving it the item becomes ``active``.
        Any exception, or cancellation, removes every object written and the row.
        """
        check_fields(fields or {})
        now = self.clock.now()
        item_id = uuid7()
        data_key = crypto.new_data_key()
        try:
            wrapped = await self.keys.wrap(tenant, data_key, str(item_id))
        except KeyringError as exc:
            raise translate_storage_error(exc) from exc
        item = Item(
            id=item_id, tenant=tenant, channel=channel.value, external_id=external_id,
            status=ItemStatus.PENDING.value, started_at=started_at,
            object_key=object_key(tenant, channel.value, started_at, item_id),
            wrapped_key=wrapped.blob, kek_id=wrapped.kek_id,
            created_at=now, updated_at=now, **dict(fields or {}),
        )
        tenant_row = await self._insert_pending(item)
        writer = ItemWriter(self, item, tenant_row, data_key)
        try:
            yield writer
            await self._activate(writer, actor)
        except BaseException:
            await asyncio.shield(self._discard(item, writer.kinds))
            raise

    async def put(
        self,
        *,
        tenant: str,
        channel: Channel,
        external_id: str,
        started_at: datetime,
        media_type: str,
        chunks: AsyncIterator[bytes],
        actor: Actor,
        fields: Mapping[str, Any] | None = None,
    ) -> Item:
        """Store an item with one object (its media): the common case."""
        async with self.writer(tenant=tenant, channel=channel, external_id=external_id,
                               started_at=started_at, actor=actor, fields=fields) as w:
            await w.store(MEDIA, media_type, chunks)
        return w.item

    async def _insert_pending(self, item: Item) -> Tenant:
        """Insert the pending row; return its tenant as read in the same transaction."""
        async with self.db.session() as session:
            tenant = await session.get(Tenant, item.tenant)
            if tenant is None:
                raise NotFoundError(f"no tenant {item.tenant!r}")
            session.add(item)
            try:
                await session.commit()
            except SAIntegrityError:
                await session.rollback()
            else:
                return tenant
        existing = await self.find_external(item.tenant, Channel(item.channel), item.external_id)
        if existing is None:  # a concurrent upload of the id held it, then failed
            raise UnavailableError(
                f"a concurrent upload of {item.external_id!r} failed; retry it")
        raise DuplicateItemError(existing)

    async def find_external(
        self, tenant: str, channel: Channel, external_id: str
    ) -> Item | None:
        """The item a producer stored under ``external_id``, whatever its status."""
        async with self.db.reader() as session:
            stmt = select(Item).where(Item.tenant == tenant, Item.channel == channel.value,
                                      Item.external_id == external_id)
            return (await session.exec(stmt)).first()

    async def _store_object(
        self, item: Item, data_key: bytes, kind: str, chunks: AsyncIterator[bytes],
        at: str | None = None,
    ) -> tuple[int, str]:
        """Encrypt and store one object of ``item`` (at its usual key unless ``at`` names
        another); return its plaintext size and SHA-256."""
        hasher = hashlib.sha256()
        size = 0

        async def hashed() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                hasher.update(chunk)
                size += len(chunk)
                yield chunk

        key = crypto.derive_object_key(data_key, kind)
        sealed = crypto.encrypt(key, item.id.bytes, hashed(), self.segment_size)
        try:
            await self.store.put(at or object_key_of(item, kind), sealed)
        except StorageError as exc:
            raise translate_storage_error(exc) from exc
        return size, hasher.hexdigest()

    async def _activate(self, writer: "ItemWriter", actor: Actor) -> None:
        """Make the item active: its retention from the tenant's policy in force, and the
        live query holds it matches, all read under the tenant's shared lock so that a policy
        change or a new query hold either sees this item or is seen by it."""
        item = writer.item
        if MEDIA not in writer.kinds:
            raise ValueError("an item cannot be activated without its media object")
        item.status = ItemStatus.ACTIVE.value
        item.updated_at = self.clock.now()
        async with self.db.session() as session:
            await tenant_lock(session, item.tenant, exclusive=False)
            if item.retain_until is None:
                basis = await retention.basis_for(session, item.tenant, Channel(item.channel),
                                                  self.windows)
                item.retention_basis = basis
                item.retain_until = retention.retain_until(item.started_at, item.ended_at,
                                                           basis["days"])
            session.add(item)
            await session.flush()
            held_by = await live_holds_matching(session, item)
            for hold_id in held_by:
                session.add(HoldItem(hold_id=hold_id, item_id=item.id, added_by=LIVE_HOLD,
                                     added_at=item.updated_at))
            item.held = bool(held_by)
            await audit.append(session, tenant=item.tenant, at=item.updated_at,
                               actor=actor.name, role=actor.role, action="item.ingest",
                               item_id=item.id,
                               detail={"channel": item.channel, "size": item.plain_size,
                                       **({"held_by": len(held_by)} if held_by else {})})
            await session.commit()
        if held_by:
            await self.lock_objects_quietly(item)

    async def _discard(self, item: Item, kinds: set[str]) -> None:
        """Undo a failed write: delete the ``pending`` row, then its objects. The row goes
        first because a cancellation can arrive after the activation's commit reached the
        database: then the row is ``active`` and its objects must stay. Objects left behind
        by a failure here have no item, and the sweeper deletes them after its grace."""
        try:
            async with self.db.session() as session:
                result = await session.exec(
                    sa.delete(Item).where(col(Item.id) == item.id,
                                          col(Item.status) == ItemStatus.PENDING.value))
                await session.commit()
                removed = result.rowcount > 0
                if not removed and await session.get(Item, item.id) is not None:
                    return  # activated after all: keep what it stored
            for kind in sorted(kinds | {MEDIA}):
                await self.store.delete(object_key_of(item, kind))
        except Exception:  # the original error matters more; the sweeper retries
            log.warning("could not discard failed item %s; the sweeper will", item.id,
                        exc_info=True)

    # -- reading -------------------------------------------------------------------------------

    async def get(self, tenant: str, item_id: uuid.UUID) -> Item:
        """The item if it belongs to ``tenant`` and is not pending; ``NotFoundError`` otherwise
        (another tenant's item is indistinguishable from no item)."""
        async with self.db.reader() as session:
            item = await session.get(Item, item_id)
        if item is None or item.tenant != tenant or item.status == ItemStatus.PENDING.value:
            raise NotFoundError(f"no item {item_id}")
        return item

    async def read(self, item: Item, start: int = 0, end: int | None = None,
                   kind: str = MEDIA) -> AsyncIterator[bytes]:
        """Yield plaintext ``[start, end)`` of one of the item's objects (its media unless
        ``kind`` names another), decrypting only the segments needed."""
        readable = {ItemStatus.ACTIVE.value, ItemStatus.ANONYMISED.value}
        if item.status not in readable or item.wrapped_key is None:
            raise NotFoundError(f"item {item.id} has no content: it was destroyed")
        assert item.kek_id is not None
        size = item.plain_size if kind == MEDIA else (item.objects or {}).get(kind, {}).get(
            "size")
        if size is None:
            raise NotFoundError(f"item {item.id} has no {kind} object")
        try:
            data_key = await self.keys.unwrap(
                item.tenant, WrappedKey(item.kek_id, item.wrapped_key), str(item.id))
            async for chunk in crypto.decrypt_range(
                self.store, object_key_of(item, kind),
                key=crypto.derive_object_key(data_key, kind), aad=item.id.bytes,
                plain_size=size, start=start, end=end,
            ):
                yield chunk
        except StorageError as exc:
            # The type only: provider messages may name keys or hosts, never needed here.
            log.error("item %s could not be read: %s", item.id, type(exc).__name__)  # noqa: TRY400
            raise translate_storage_error(exc) from exc

    # -- keys ----------------------------------------------------------------------------------

    async def rotate_keys(self, tenant: str, actor: Actor = SYSTEM) -> tuple[str, int]:
        """Make a new KEK version current and re-wrap every data key of the tenant to it."""
        try:
            kek_id = await self.keys.rotate(tenant)
        except KeyringError as exc:
            raise translate_storage_error(exc) from exc
        return kek_id, await self.rewrap_keys(tenant, actor)

    async def rewrap_keys(self, tenant: str, actor: Actor = SYSTEM) -> int:
        """Re-wrap data keys not under the tenant's current KEK (resumable: each batch commits).
        Objects are not touched: only the wrapped keys in the index change."""
        current = await self.keys.current_kek_id(tenant)
        total = 0
        while True:
            async with self.db.session() as session:
                rows = (await session.exec(
                    select(Item).where(Item.tenant == tenant, col(Item.wrapped_key).is_not(None),
                                       Item.kek_id != current)
                    .limit(REWRAP_BATCH).with_for_update(skip_locked=True)
                )).all()
                if not rows:
                    break
                for item in rows:
                    assert item.wrapped_key is not None and item.kek_id is not None
                    try:
                        key = await self.keys.unwrap(
                            tenant, WrappedKey(item.kek_id, item.wrapped_key), str(item.id))
                        wrapped = await self.keys.wrap(tenant, key, str(item.id))
                    except KeyringError as exc:
                        raise translate_storage_error(exc) from exc
                    item.wrapped_key, item.kek_id = wrapped.blob, wrapped.kek_id
                    session.add(item)
                total += len(rows)
                await session.commit()
        async with self.db.session() as session:
            await audit.append(session, tenant=tenant, at=self.clock.now(), actor=actor.name,
                               role=actor.role, action="keys.rewrap",
                               detail={"kek_id": current, "rewrapped": total})
            await session.commit()
        return total

    # -- replacing content ---------------------------------------------------------------------

    async def replace_content(
        self, item: Item, *, media_type: str, data: bytes, fields: Mapping[str, Any],
        status: ItemStatus, actor: Actor, action: str,
        detail: Mapping[str, Any] | None = None,
    ) -> Item:
        """Replace all of an item's content with one new media object under a new data key,
        set ``fields`` and ``status``, and delete the item's earlier versions (anonymisation).

        The new object is stored first, at a new object key; one commit then switches the index
        to it (new wrapped key, object facts, fields) and appends the ``action`` audit event;
        the old objects are deleted after. The old data key goes with that commit, so every
        copy of the old objects is unreadable from then on, whether or not their deletion
        succeeds. Any failure before the commit deletes the new object and leaves the item as
        it was. Refused (``ConflictError``) while a hold is active, or when the item changed
        since ``item`` was read (its ``updated_at`` differs): read it again and retry.
        """
        check_fields(fields)
        data_key = crypto.new_data_key()
        try:
            wrapped = await self.keys.wrap(item.tenant, data_key, str(item.id))
        except KeyringError as exc:
            raise translate_storage_error(exc) from exc
        base = object_key(item.tenant, item.channel, item.started_at, item.id)
        new_key = f"{base}.c{uuid7().hex}"
        try:
            size, digest = await self._store_object(
                item, data_key, MEDIA, iter_bytes(data), at=new_key)
            old_objects = await self._switch_content(
                item, new_key, wrapped, media_type=media_type, size=size, digest=digest,
                fields=fields, status=status, actor=actor, action=action, detail=detail)
        except BaseException:
            await asyncio.shield(self._delete_quietly([new_key]))
            raise
        await deletions.drain(self.db, self.store, keys=old_objects)
        return await self.get(item.tenant, item.id)

    async def _switch_content(
        self, seen: Item, new_key: str, wrapped: WrappedKey, *, media_type: str, size: int,
        digest: str, fields: Mapping[str, Any], status: ItemStatus, actor: Actor, action: str,
        detail: Mapping[str, Any] | None,
    ) -> list[str]:
        """The commit of ``replace_content``; returns the keys of the objects it replaced."""
        now = self.clock.now()
        async with self.db.session() as session:
            item = (await session.exec(
                select(Item).where(Item.id == seen.id).with_for_update())).first()
            if item is None or item.tenant != seen.tenant or item.wrapped_key is None:
                raise NotFoundError(f"no item {seen.id}")
            if item.updated_at != seen.updated_at or item.status != seen.status:
                raise ConflictError(f"item {seen.id} changed meanwhile; read it and retry")
            held = await _active_case_refs(session, item.tenant, item.id)
            if held:
                raise ConflictError(
                    f"item {item.id} is under legal hold for case(s) {', '.join(held)}")
            old = object_keys(item)
            previous_sha256 = item.sha256
            for name, value in fields.items():
                setattr(item, name, value)
            item.object_key, item.objects = new_key, None
            item.wrapped_key, item.kek_id = wrapped.blob, wrapped.kek_id
            item.media_type, item.plain_size, item.sha256 = media_type, size, digest
            item.stored_size = crypto.ciphertext_size(size, self.segment_size)
            item.status = status.value
            item.updated_at = now
            session.add(item)
            await session.exec(sa.delete(ItemVersion).where(col(ItemVersion.item_id) == item.id))
            await audit.append(session, tenant=item.tenant, at=now, actor=actor.name,
                               role=actor.role, action=action, item_id=item.id,
                               detail={**(detail or {}), "previous_sha256": previous_sha256,
                                       "sha256": digest})
            await deletions.queue(session, item.tenant, old, now)
            await session.commit()
        return old

    async def _delete_quietly(self, keys: list[str]) -> None:
        """Delete objects whose key is already gone from the index (or never reached it)."""
        for key in keys:
            try:
                await self.store.delete(key)
            except StorageError:
                log.warning("an object no longer in the index was not deleted; the sweeper will")

    # -- objects added to an active item -------------------------------------------------------

    async def add_object(
        self, item: Item, kind: str, media_type: str, chunks: AsyncIterator[bytes], *,
        actor: Actor, action: str, replaces: str | None = None,
    ) -> tuple[Item, bool]:
        """Store a further object of an active item, made from its content after ingest (a
        waveform image), encrypted under the item's data key like its media, and record it in
        ``Item.objects`` with an ``action`` audit event, so that destruction, the sweeper, the
        scrub and object locks treat it as any other object of the item. Returns the item as
        the index then has it, and whether this call's object is the one recorded.

        Each call stores at a key of its own (``{object_key}.{kind}-{id}``), so calls racing
        for the same kind never overwrite each other's object: the first to commit is recorded;
        a later one finds the kind recorded, deletes what it stored and returns the item with
        the first one's object (``False``). ``replaces`` names the key of a recorded object of
        the kind that was found damaged or missing: the new object takes its place, and the old
        one is queued for deletion, if the index still names that key.

        ``NotFoundError`` when the item is not active, or no longer has the content ``item``
        was read with (destroyed or replaced meanwhile): what was stored is deleted. A crash
        before the commit leaves an object no item names, which the sweeper deletes.
        """
        if kind == MEDIA:
            raise ValueError("an item's media is stored by its writer")
        if item.status != ItemStatus.ACTIVE.value or item.wrapped_key is None:
            raise NotFoundError(f"item {item.id} has no content: it was destroyed")
        assert item.kek_id is not None and item.object_key is not None
        try:
            data_key = await self.keys.unwrap(
                item.tenant, WrappedKey(item.kek_id, item.wrapped_key), str(item.id))
        except KeyringError as exc:
            raise translate_storage_error(exc) from exc
        at = f"{item.object_key}.{kind}-{uuid7().hex}"
        try:
            size, digest = await self._store_object(item, data_key, kind, chunks, at=at)
            facts = {"media_type": media_type, "size": size, "sha256": digest,
                     "stored_size": crypto.ciphertext_size(size, self.segment_size),
                     "object_key": at}
            recorded, won = await self._record_object(item, kind, facts, actor=actor,
                                                      action=action, replaces=replaces)
        except BaseException:
            await asyncio.shield(self._delete_quietly([at]))
            raise
        if not won:
            await self._delete_quietly([at])
        elif recorded.object_lock and self.store.supports_legal_hold:
            try:  # the item is held: its new object too (the reconciler repairs a failure)
                await self.store.set_legal_hold(at, True)
            except StorageError:
                log.warning("legal hold not set on a new object of item %s yet; the "
                            "reconciler will", item.id)
        return recorded, won

    async def _record_object(
        self, seen: Item, kind: str, facts: dict[str, Any], *, actor: Actor, action: str,
        replaces: str | None,
    ) -> tuple[Item, bool]:
        """The commit of ``add_object``."""
        now = self.clock.now()
        old: list[str] = []
        async with self.db.session() as session:
            item = (await session.exec(
                select(Item).where(Item.id == seen.id).with_for_update())).first()
            if (item is None or item.tenant != seen.tenant
                    or item.status != ItemStatus.ACTIVE.value or item.wrapped_key is None
                    or item.object_key != seen.object_key):
                raise NotFoundError(f"item {seen.id} has no content: it was destroyed")
            if kind in (item.objects or {}):
                if replaces is None or object_key_of(item, kind) != replaces:
                    return item, False
                old = [replaces]
            item.objects = {**(item.objects or {}), kind: facts}
            session.add(item)
            await audit.append(session, tenant=item.tenant, at=now, actor=actor.name,
                               role=actor.role, action=action, item_id=item.id,
                               detail={"kind": kind, "size": facts["size"],
                                       "sha256": facts["sha256"],
                                       **({"replaced": True} if old else {})})
            await deletions.queue(session, item.tenant, old, now)
            await session.commit()
        if old:
            await deletions.drain(self.db, self.store, keys=old)
        return item, True

    # -- object-level legal holds --------------------------------------------------------------

    async def set_object_lock(self, item: Item, on: bool) -> None:
        """Set (or clear) the store's legal hold on every object of the item, then record
        that in the index (``items.object_lock``). Nothing to do where the store has no
        Object Lock. Raises what the store raises; the reconciler repairs what is left."""
        if not self.store.supports_legal_hold:
            return
        try:
            for key in object_keys(item):
                await self.store.set_legal_hold(key, on)
        except StorageError as exc:
            raise translate_storage_error(exc) from exc
        async with self.db.session() as session:
            await session.exec(sa.update(Item).where(col(Item.id) == item.id)
                               .values(object_lock=on))
            await session.commit()
        item.object_lock = on

    async def lock_objects_quietly(self, item: Item) -> None:
        """``set_object_lock(item, True)`` after a hold was committed: the index already
        protects the item, so a store failure is logged for the reconciler, not raised."""
        try:
            await self.set_object_lock(item, True)
        except ArchiveError:
            log.warning("legal hold not set on the objects of item %s yet; the reconciler "
                        "will", item.id)

    # -- destruction ---------------------------------------------------------------------------

    async def active_holds(self, tenant: str, item_id: uuid.UUID) -> list[str]:
        """Case references of the active holds on an item."""
        async with self.db.reader() as session:
            return await _active_case_refs(session, tenant, item_id)

    async def destroy(
        self, tenant: str, item_id: uuid.UUID, *, reason: str, actor: Actor,
        status: ItemStatus = ItemStatus.ERASED, action: str = "item.destroy",
        keep: Callable[[Item], Mapping[str, Any]] | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Destruction:
        """Crypto-shred an item: its wrapped key is destroyed, personal fields, earlier
        versions (rectifications) and quality reviews deleted, a destruction record written,
        then its objects deleted. Refused while any hold is active.

        The commit that drops the wrapped key is the moment of destruction: every copy of the
        object (replicas, backups) is unreadable from then on. The same commit queues the
        objects for deletion (archive.deletions), which follows at once; what fails there
        stays queued for the next purge pass or sweep.

        ``keep`` returns, from the item as it was, values to set after personal fields are
        stripped (anonymisation keeps a postcode's district); ``detail`` is added to the audit
        event of ``action`` and must hold no personal data.
        """
        now = self.clock.now()
        async with self.db.session() as session:
            item = (await session.exec(
                select(Item).where(Item.id == item_id).with_for_update())).first()
            if item is None or item.tenant != tenant or item.status == ItemStatus.PENDING.value:
                raise NotFoundError(f"no item {item_id}")
            if item.status in {ItemStatus.PURGED.value, ItemStatus.ERASED.value} or (
                    item.wrapped_key is None):
                raise ConflictError(f"item {item_id} was already destroyed")
            held = await _active_case_refs(session, tenant, item_id)
            if held:
                raise ConflictError(
                    f"item {item_id} is under legal hold for case(s) {', '.join(held)}")
            kept = dict(keep(item)) if keep is not None else {}
            record = Destruction(
                id=uuid7(), item_id=item.id, tenant=tenant, channel=item.channel, reason=reason,
                retention_basis=item.retention_basis, retain_until=item.retain_until,
                destroyed_at=now, stored_sha256=item.sha256, actor=actor.name)
            objects = object_keys(item)
            item.wrapped_key = None
            item.kek_id = None
            for name in PERSONAL_FIELDS:
                setattr(item, name, None)
            for name, value in kept.items():
                setattr(item, name, value)
            item.status = status.value
            item.updated_at = now
            session.add(item)
            session.add(record)
            await session.exec(sa.delete(ItemVersion).where(col(ItemVersion.item_id) == item.id))
            await delete_reviews(session, [item.id])
            await audit.append(session, tenant=tenant, at=now, actor=actor.name, role=actor.role,
                               action=action, item_id=item.id,
                               detail={**(detail or {}), "reason": reason,
                                       "destruction_id": str(record.id)})
            await deletions.queue(session, tenant, objects, now)
            await session.commit()
        await deletions.drain(self.db, self.store, keys=objects)
        return record


async def _active_case_refs(session: Any, tenant: str, item_id: uuid.UUID) -> list[str]:
    stmt = (select(Hold.case_ref).join(HoldItem, col(HoldItem.hold_id) == col(Hold.id))
            .where(HoldItem.item_id == item_id, Hold.tenant == tenant, Hold.status == "active")
            .order_by(col(Hold.case_ref)).distinct())
    return list((await session.exec(stmt)).all())
