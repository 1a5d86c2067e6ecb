"""The lifecycle's promises, checked after every step of random interleavings (hypothesis).

A model tracks what the archive should hold: each item's window end (from the policy in force
when it arrived, or the latest change), its holds (by id, or by a live query on the agent), and
whether it was destroyed. Steps ingest, hold by ids and by query, release, change a policy,
advance the clock and run purge passes against a real Archive (SQLite index, local encrypted
store). After every step: no held item destroyed, the archive's holds and ``held`` flags match
the model, every destruction record matches a destroyed item; after a purge pass: every
expired, unheld item is destroyed and nothing else is.
"""

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)
from sqlmodel import select

from archive.clock import ManualClock
from archive.db import Database
from archive.models import Channel, Destruction, Hold, HoldItem, Item, ItemStatus
from archive.retention import DEFAULT_DAYS
from archive.service import Actor, Archive
from archive.tokens import ensure_tenant
from lifecycle.holds import place_hold, release_hold
from lifecycle.policies import apply_change, plan_change
from lifecycle.purge import purge_pass
from storage.base import iter_bytes
from storage.keyring import LocalKeyring
from storage.local import LocalBlobStore

T = TypeVar("T")
TENANT = "camden"
START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
AGENTS = ("a1", "a2", "a3")
STAFF = Actor("complaints-1", "complaints")
ADMIN = Actor("admin-1", "admin")
_template: Path | None = None


def migrated_template() -> Path:
    """One migrated SQLite index, copied for each example (migrating each time is slow)."""
    global _template  # noqa: PLW0603  (a per-process cache of a file that never changes)
    if _template is None:
        folder = Path(tempfile.mkdtemp(prefix="lifecycle-sm-"))
        path = folder / "template.db"

        async def migrate() -> None:
            db = Database(f"sqlite+aiosqlite:///{path}")
            await db.upgrade()
            await db.close()

        asyncio.run(migrate())
        _template = path
    return _template


@dataclass
class ModelItem:
    id: uuid.UUID
    channel: Channel
    agent: str
    ended: datetime
    days: int
    holds: set[uuid.UUID] = field(default_factory=set)
    destroyed: bool = False

    @property
    def retain_until(self) -> datetime:
        return self.ended + timedelta(days=self.days)


@dataclass
class ModelHold:
    id: uuid.UUID
    agent: str | None  # a live query hold on this agent, or None (a hold on ids)
    active: bool = True


class Lifecycle(RuleBasedStateMachine):
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = Path(tempfile.mkdtemp(prefix="lifecycle-sm-"))
        shutil.copy(migrated_template(), self.folder / "index.db")
        self.clock = ManualClock(START)
        self.db = Database(f"sqlite+aiosqlite:///{self.folder / 'index.db'}")
        self.archive = Archive(
            self.db, self.run(LocalBlobStore(self.folder / "store").open()),
            self.run(LocalKeyring(self.folder / "keyring.json").open()), self.clock,
            segment_size=4096)
        self.run(self._tenant())
        self.items: dict[uuid.UUID, ModelItem] = {}
        self.model_holds: dict[uuid.UUID, ModelHold] = {}
        self.days = dict(DEFAULT_DAYS)
        self.serial = 0

    def run(self, aw: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(aw)

    async def _tenant(self) -> None:
        async with self.db.session() as session:
            await ensure_tenant(session, TENANT, START)
            await session.commit()

    def teardown(self) -> None:
        self.run(self.archive.store.close())
        self.run(self.archive.keys.close())
        self.run(self.db.close())
        self.loop.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- steps ---------------------------------------------------------------------------------

    @rule(channel=st.sampled_from(Channel), agent=st.sampled_from(AGENTS),
          age_days=st.integers(0, 900), minutes=st.integers(0, 90))
    def ingest(self, channel: Channel, agent: str, age_days: int, minutes: int) -> None:
        started = self.clock.now() - timedelta(days=age_days, minutes=minutes + 1)
        ended = started + timedelta(minutes=minutes) if minutes else None
        self.serial += 1
        item = self.run(self.archive.put(
            tenant=TENANT, channel=channel, external_id=f"x{self.serial}", started_at=started,
            media_type="text/plain", chunks=iter_bytes(f"content {self.serial}".encode()),
            actor=Actor("pbx", "ingest"), fields={"agent_id": agent, "ended_at": ended}))
        model = ModelItem(item.id, channel, agent, ended or started, self.days[channel])
        model.holds = {h.id for h in self.model_holds.values()
                       if h.active and h.agent == agent}  # live query holds take it
        self.items[item.id] = model

    @precondition(lambda self: any(not i.destroyed for i in self.items.values()))
    @rule(target=holds, data=st.data())
    def hold_ids(self, data: st.DataObject) -> uuid.UUID:
        living = sorted(i.id for i in self.items.values() if not i.destroyed)
        chosen = data.draw(st.lists(st.sampled_from(living), min_size=1, max_size=4,
                                    unique=True))
        placed = self.run(place_hold(self.archive, tenant=TENANT, actor=STAFF,
                                     case_ref="CMP-1", reason="complaint",
                                     item_ids=chosen))
        assert placed.already_destroyed == []
        assert placed.item_count == len(chosen)
        self.model_holds[placed.hold.id] = ModelHold(placed.hold.id, None)
        for item_id in chosen:
            self.items[item_id].holds.add(placed.hold.id)
        return placed.hold.id

    @rule(target=holds, agent=st.sampled_from(AGENTS))
    def hold_query(self, agent: str) -> uuid.UUID:
        placed = self.run(place_hold(self.archive, tenant=TENANT, actor=STAFF,
                                     case_ref="CMP-2", reason="complaint",
                                     query={"agent_id": agent}))
        matching = [i for i in self.items.values() if i.agent == agent and not i.destroyed]
        assert placed.item_count == len(matching)
        self.model_holds[placed.hold.id] = ModelHold(placed.hold.id, agent)
        for item in matching:
            item.holds.add(placed.hold.id)
        return placed.hold.id

    @rule(hold_id=consumes(holds))
    def release(self, hold_id: uuid.UUID) -> None:
        self.run(release_hold(self.archive, tenant=TENANT, actor=STAFF, hold_id=hold_id,
                              reason="complaint resolved"))
        self.model_holds[hold_id].active = False
        for item in self.items.values():
            item.holds.discard(hold_id)

    @rule(channel=st.sampled_from(Channel), days=st.sampled_from([30, 183, 365, 730, 2555]))
    def change_policy(self, channel: Channel, days: int) -> None:
        plan = self.run(plan_change(self.archive, TENANT, channel, days))
        self.run(apply_change(self.archive, tenant=TENANT, channel=channel, days=days,
                              actor=ADMIN, source="api", reason=None, confirm=plan.confirm))
        self.days[channel] = days
        for item in self.items.values():
            if item.channel == channel and not item.destroyed:
                item.days = days

    @rule(days=st.integers(1, 400))
    def advance(self, days: int) -> None:
        self.clock.advance(timedelta(days=days))

    @rule(batch=st.integers(1, 5))
    def purge(self, batch: int) -> None:
        self.run(purge_pass(self.archive, batch_size=batch))
        now = self.clock.now()
        for item in self.items.values():
            if not item.destroyed and not item.holds and item.retain_until <= now:
                item.destroyed = True
        states = self._states()
        for item in self.items.values():  # each expired, unheld item went, nothing else
            assert (states[item.id].status == ItemStatus.PURGED.value) == item.destroyed, (
                item, states[item.id].status)

    # -- what must always hold -----------------------------------------------------------------

    def _states(self) -> dict[uuid.UUID, Item]:
        async def read() -> dict[uuid.UUID, Item]:
            async with self.db.reader() as session:
                return {i.id: i for i in (await session.exec(select(Item))).all()}
        return self.run(read())

    @invariant()
    def no_held_item_destroyed_and_holds_match(self) -> None:
        async def read() -> set[tuple[uuid.UUID, uuid.UUID]]:
            async with self.db.reader() as session:
                rows = (await session.exec(
                    select(HoldItem.item_id, HoldItem.hold_id)
                    .join(Hold, Hold.id == HoldItem.hold_id)  # type: ignore[arg-type]
                    .where(Hold.status == "active"))).all()
            return set(rows)

        in_index = self.run(read())
        expected = {(i.id, h) for i in self.items.values() for h in i.holds}
        assert in_index == expected
        states = self._states()
        for item in self.items.values():
            state = states[item.id]
            assert state.held == bool(item.holds)
            if item.holds:
                assert state.status == ItemStatus.ACTIVE.value
                assert state.wrapped_key is not None
            if not item.destroyed:
                assert state.retain_until == item.retain_until

    @invariant()
    def destructions_match_destroyed_items(self) -> None:
        async def read() -> list[Destruction]:
            async with self.db.reader() as session:
                return list((await session.exec(select(Destruction))).all())

        records = self.run(read())
        states = self._states()
        destroyed = {i for i, s in states.items() if s.status == ItemStatus.PURGED.value}
        assert sorted(r.item_id for r in records) == sorted(destroyed)
        for record in records:
            state = states[record.item_id]
            assert record.reason == "retention"
            assert record.stored_sha256 == state.sha256
            assert record.retain_until is not None
            assert record.retain_until <= record.destroyed_at
            assert state.wrapped_key is None


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(max_examples=75, stateful_step_count=40, deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow])
