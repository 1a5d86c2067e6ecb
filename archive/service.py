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
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlmodel import col, select

from archive import audit
from archive.clock import Clock
from archive.db import Database
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
)
from storage import crypto
from storage.base import BlobStore
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
    "agent_extension", "service", "queue", "customer_name", "customer_email",
    "customer_postcode", "special_category", "tags", "extra", "media",
})
REWRAP_BATCH = 500


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


@dataclass(frozen=True, slots=True)
class Actor:
    """Who does something, as the audit log records it."""

    name: str
    role: str


SYSTEM = Actor("system", "system")


class Archive:
    """Index plus encrypted store, behind one interface for ingest, retrieval and lifecycle."""

    def __init__(
        self,
        db: Database,
        store: BlobStore,
        keys: KeyProvider,
        clock: Clock,
        segment_size: int = crypto.DEFAULT_SEGMENT_SIZE,
    ) -> None:
        self.db = db
        self.store = store
        self.keys = keys
        self.clock = clock
        self.segment_size = segment_size

    # -- writing -------------------------------------------------------------------------------

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
        """Store one item whole, or nothing. See the module docstring for the steps."""
        unknown = set(fields or {}) - ITEM_FIELDS
        if unknown:
            raise ValueError(f"not item fields: {sorted(unknown)}")
        now = self.clock.now()
        item_id = uuid7()
        key = crypto.new_data_key()
        try:
            wrapped = await self.keys.wrap(tenant, key, str(item_id))
        except KeyringError as exc:
            raise translate_storage_error(exc) from exc
        item = Item(
            id=item_id, tenant=tenant, channel=channel.value, external_id=external_id,
            status=ItemStatus.PENDING.value, started_at=started_at,
            object_key=object_key(tenant, channel.value, started_at, item_id),
            media_type=media_type, wrapped_key=wrapped.blob, kek_id=wrapped.kek_id,
            created_at=now, updated_at=now, **dict(fields or {}),
        )
        async with self.db.session() as session:
            session.add(item)
            try:
                await session.commit()
            except SAIntegrityError:
                await session.rollback()
                if await self._find_external(session, tenant, channel, external_id) is None:
                    raise  # not a duplicate: a broken invariant (no such tenant, say)
                raise ConflictError(
                    f"an item with external_id {external_id!r} already exists") from None
        try:
            size, digest = await self._store_object(item, key, chunks)
            async with self.db.session() as session:
                item.status = ItemStatus.ACTIVE.value
                item.plain_size = size
                item.sha256 = digest
                item.stored_size = crypto.ciphertext_size(size, self.segment_size)
                item.updated_at = self.clock.now()
                session.add(item)
                await audit.append(session, tenant=tenant, at=item.updated_at, actor=actor.name,
                                   role=actor.role, action="item.ingest", item_id=item.id,
                                   detail={"channel": item.channel, "size": size})
                await session.commit()
        except BaseException:
            await asyncio.shield(self._discard(item))
            raise
        return item

    @staticmethod
    async def _find_external(
        session: Any, tenant: str, channel: Channel, external_id: str
    ) -> Item | None:
        stmt = select(Item).where(Item.tenant == tenant, Item.channel == channel.value,
                                  Item.external_id == external_id)
        found: Item | None = (await session.exec(stmt)).first()
        return found

    async def _store_object(
        self, item: Item, key: bytes, chunks: AsyncIterator[bytes]
    ) -> tuple[int, str]:
        hasher = hashlib.sha256()
        size = 0

        async def hashed() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                hasher.update(chunk)
                size += len(chunk)
                yield chunk

        assert item.object_key is not None
        sealed = crypto.encrypt(key, item.id.bytes, hashed(), self.segment_size)
        try:
            await self.store.put(item.object_key, sealed)
        except StorageError as exc:
            raise translate_storage_error(exc) from exc
        return size, hasher.hexdigest()

    async def _discard(self, item: Item) -> None:
        """Undo a failed put: delete the object, then the row. What fails here the sweeper
        finishes, since the row stays ``pending``."""
        try:
            assert item.object_key is not None
            await self.store.delete(item.object_key)
            async with self.db.session() as session:
                await session.exec(
                    sa.delete(Item).where(col(Item.id) == item.id,
                                          col(Item.status) == ItemStatus.PENDING.value))
                await session.commit()
        except Exception:  # the original error matters more; the sweeper retries
            log.warning("could not discard failed item %s; the sweeper will", item.id,
                        exc_info=True)

    # -- reading -------------------------------------------------------------------------------

    async def get(self, tenant: str, item_id: uuid.UUID) -> Item:
        """The item if it belongs to ``tenant`` and is not pending; ``NotFoundError`` otherwise
        (another tenant's item is indistinguishable from no item)."""
        async with self.db.session() as session:
            item = await session.get(Item, item_id)
        if item is None or item.tenant != tenant or item.status == ItemStatus.PENDING.value:
            raise NotFoundError(f"no item {item_id}")
        return item

    async def read(self, item: Item, start: int = 0, end: int | None = None
                   ) -> AsyncIterator[bytes]:
        """Yield the item's plaintext ``[start, end)``, decrypting only the segments needed."""
        if item.status != ItemStatus.ACTIVE.value or item.wrapped_key is None:
            raise NotFoundError(f"item {item.id} has no content: it was destroyed")
        assert item.object_key is not None and item.kek_id is not None
        assert item.plain_size is not None
        try:
            key = await self.keys.unwrap(item.tenant, WrappedKey(item.kek_id, item.wrapped_key),
                                         str(item.id))
            async for chunk in crypto.decrypt_range(
                self.store, item.object_key, key=key, aad=item.id.bytes,
                plain_size=item.plain_size, start=start, end=end,
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

    # -- destruction ---------------------------------------------------------------------------

    async def active_holds(self, tenant: str, item_id: uuid.UUID) -> list[str]:
        """Case references of the active holds on an item."""
        async with self.db.session() as session:
            return await _active_case_refs(session, tenant, item_id)

    async def destroy(
        self, tenant: str, item_id: uuid.UUID, *, reason: str, actor: Actor,
        status: ItemStatus = ItemStatus.ERASED,
    ) -> Destruction:
        """Crypto-shred an item: its wrapped key is destroyed, personal fields stripped, a
        destruction record written, then its object deleted. Refused while any hold is active.

        The commit that drops the wrapped key is the moment of destruction: every copy of the
        object (replicas, backups) is unreadable from then on, whether or not the object delete
        that follows succeeds (the sweeper removes objects whose item is gone).
        """
        now = self.clock.now()
        async with self.db.session() as session:
            item = (await session.exec(
                select(Item).where(Item.id == item_id).with_for_update())).first()
            if item is None or item.tenant != tenant or item.status == ItemStatus.PENDING.value:
                raise NotFoundError(f"no item {item_id}")
            if item.status in {ItemStatus.PURGED.value, ItemStatus.ERASED.value}:
                raise ConflictError(f"item {item_id} was already destroyed")
            held = await _active_case_refs(session, tenant, item_id)
            if held:
                raise ConflictError(
                    f"item {item_id} is under legal hold for case(s) {', '.join(held)}")
            record = Destruction(
                id=uuid7(), item_id=item.id, tenant=tenant, channel=item.channel, reason=reason,
                retention_basis=item.retention_basis, retain_until=item.retain_until,
                destroyed_at=now, stored_sha256=item.sha256, actor=actor.name)
            obj = item.object_key
            item.wrapped_key = None
            item.kek_id = None
            for name in PERSONAL_FIELDS:
                setattr(item, name, None)
            item.status = status.value
            item.updated_at = now
            session.add(item)
            session.add(record)
            await audit.append(session, tenant=tenant, at=now, actor=actor.name, role=actor.role,
                               action="item.destroy", item_id=item.id,
                               detail={"reason": reason, "destruction_id": str(record.id)})
            await session.commit()
        if obj is not None:
            try:
                await self.store.delete(obj)
            except StorageError:
                log.warning("object of destroyed item %s not deleted yet; the sweeper will",
                            item_id)
        return record


async def _active_case_refs(session: Any, tenant: str, item_id: uuid.UUID) -> list[str]:
    stmt = (select(Hold.case_ref).join(HoldItem, col(HoldItem.hold_id) == col(Hold.id))
            .where(HoldItem.item_id == item_id, Hold.tenant == tenant, Hold.status == "active")
            .order_by(col(Hold.case_ref)).distinct())
    return list((await session.exec(stmt)).all())
