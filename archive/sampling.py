"""Quality sampling: a fair, reproducible draw of calls for monitors to review.

Candidates are the tenant's active calls with an agent, started in ``[from, to)``, narrowed by
the optional filters (service, agents, minimum duration) and, by default, without calls that
anyone has reviewed or that sit under an active legal hold. Every filter runs in SQL; one query
fetches the candidates' ids, aggregated per agent, and the ranking happens here.

Fairness: the draw is stratified by agent. With ``per_agent`` each agent gives
``min(per_agent, their calls)``. With ``size`` the calls are shared as evenly as possible
(water-filling): an agent with fewer calls than their share gives all of them and what they
could not give is shared among the others; when the size does not divide evenly, the agents
who give one call more are chosen by the seed (ranked by ``SHA-256("agent:" + seed + agent)``).

Uniform within an agent and reproducible: each candidate is ranked by
``SHA-256(seed + item id)`` (UTF-8; the id as 32 lower-case hex digits, no hyphens) and an
agent's ``k`` calls are the ``k`` smallest. The sample therefore depends only on the inputs,
the seed and the set of candidates, never on row order; another seed gives another
(independent) ranking.
Re-drawing with the stored inputs gives the same calls for as long as the candidates are the
same: calls reviewed, held, ingested or destroyed since change them.
"""

import hashlib
import heapq
import math
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from archive import audit
from archive.db import Database
from archive.errors import BadRequestError, FieldError, NotFoundError
from archive.ids import parse_uuid, uuid7
from archive.models import Channel, Item, ItemStatus, Review, Sample
from archive.search import _moment
from archive.service import Actor

MAX_SIZE = 10_000  # calls in one sample, however asked for
MAX_PER_AGENT = 1_000
MAX_SEED = 64
MAX_AGENT_IDS = 1_000
MAX_TEXT = 100  # agent ids and services, as in the index
MAX_PAGE = 100
DEFAULT_PAGE = 20
_IN_CHUNK = 1000
FIELDS = ("from", "to", "size", "per_agent", "service", "agent_ids", "min_duration",
          "exclude_reviewed", "exclude_held", "seed")


@dataclass(frozen=True)
class DrawInputs:
    """What to draw, checked and normalised (build with ``parse_inputs``)."""

    from_: datetime
    to: datetime
    size: int | None
    per_agent: int | None
    service: str | None
    agent_ids: tuple[str, ...] | None
    min_duration: float | None
    exclude_reviewed: bool
    exclude_held: bool
    seed: str

    def as_json(self) -> dict[str, Any]:
        """The normalised inputs, seed included, as stored with the sample: posting them back
        draws the same sample from the same candidates."""
        return {"from": self.from_.isoformat(), "to": self.to.isoformat(), "size": self.size,
                "per_agent": self.per_agent, "service": self.service,
                "agent_ids": list(self.agent_ids) if self.agent_ids is not None else None,
                "min_duration": self.min_duration, "exclude_reviewed": self.exclude_reviewed,
                "exclude_held": self.exclude_held, "seed": self.seed}


@dataclass(frozen=True)
class SampledCall:
    """What a sample shows of each call drawn (metadata a monitor may read)."""

    id: uuid.UUID
    agent_id: str | None
    started_at: datetime
    duration: float | None
    service: str | None
    status: str


@dataclass(frozen=True)
class Drawn:
    """A stored sample and its calls in draw order (grouped by agent, agents by id)."""

    sample: Sample
    calls: list[SampledCall]
    per_agent: dict[str, int]


@dataclass(frozen=True)
class SamplePage:
    samples: list[Sample]
    next_cursor: str | None


# -- checking input ---------------------------------------------------------------------------

def _whole(value: Any, name: str, top: int, errors: list[FieldError]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        errors.append(FieldError(name, f"must be a whole number from 1 to {top:,}"))
        return None
    return value


def _label(value: Any, name: str, errors: list[FieldError]) -> str | None:
    if not isinstance(value, str):
        errors.append(FieldError(name, "must be a string"))
        return None
    text = value.strip()
    if not text or len(text) > MAX_TEXT:
        errors.append(FieldError(name, f"must be 1 to {MAX_TEXT} characters"))
        return None
    if any(not ch.isprintable() for ch in text):
        errors.append(FieldError(name, "must not contain control characters"))
        return None
    return text


def _flag(value: Any, name: str, errors: list[FieldError]) -> bool:
    if value is None:
        return True
    if not isinstance(value, bool):
        errors.append(FieldError(name, "must be true or false"))
        return True
    return value


def _seed(value: Any, errors: list[FieldError]) -> str:
    if value is None:
        return secrets.token_hex(16)
    if (not isinstance(value, str) or not value or len(value) > MAX_SEED
            or any(not ch.isprintable() for ch in value)):
        errors.append(FieldError("seed", f"must be a string of 1 to {MAX_SEED} printable "
                                         "characters"))
        return ""
    return value


def _window(raw: Mapping[str, Any], errors: list[FieldError]) -> tuple[datetime, datetime]:
    moments: dict[str, datetime] = {}
    for name in ("from", "to"):
        value = raw.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            errors.append(FieldError(name, "is required"))
            continue
        try:
            moments[name] = _moment(value)
        except (TypeError, ValueError) as exc:
            errors.append(FieldError(name, str(exc)))
    start, end = moments.get("from"), moments.get("to")
    if start is not None and end is not None and end <= start:
        errors.append(FieldError("to", "must be after from"))
    never = datetime.min.replace(tzinfo=UTC)  # only when errors were found
    return start or never, end or never


def parse_inputs(raw: Mapping[str, Any]) -> DrawInputs:
    """Check a draw's inputs (JSON values); ``BadRequestError`` names every bad field. A
    missing seed is generated."""
    errors = [FieldError(name, "is not a known field") for name in sorted(set(raw) - set(FIELDS))]
    start, end = _window(raw, errors)
    size = _whole(raw.get("size"), "size", MAX_SIZE, errors)
    per_agent = _whole(raw.get("per_agent"), "per_agent", MAX_PER_AGENT, errors)
    if raw.get("size") is None and raw.get("per_agent") is None:
        errors.append(FieldError("size", "give exactly one of size and per_agent"))
    elif raw.get("size") is not None and raw.get("per_agent") is not None:
        errors.append(FieldError("per_agent", "cannot be given with size: give one of them"))
    service = None if raw.get("service") is None else _label(raw["service"], "service", errors)
    agent_ids: tuple[str, ...] | None = None
    raw_agents = raw.get("agent_ids")
    if raw_agents is not None:
        if not isinstance(raw_agents, list) or not 1 <= len(raw_agents) <= MAX_AGENT_IDS:
            errors.append(FieldError("agent_ids", f"must be a list of 1 to {MAX_AGENT_IDS:,} "
                                                  "agent ids"))
        else:
            labels = [_label(a, f"agent_ids[{n}]", errors) for n, a in enumerate(raw_agents)]
            agent_ids = tuple(sorted({a for a in labels if a is not None}))
    min_duration: float | None = None
    raw_min = raw.get("min_duration")
    if raw_min is not None:
        if (isinstance(raw_min, bool) or not isinstance(raw_min, int | float)
                or not math.isfinite(raw_min) or raw_min < 0):
            errors.append(FieldError("min_duration", "must be a number of seconds, 0 or more"))
        else:
            min_duration = float(raw_min)
    exclude_reviewed = _flag(raw.get("exclude_reviewed"), "exclude_reviewed", errors)
    exclude_held = _flag(raw.get("exclude_held"), "exclude_held", errors)
    seed = _seed(raw.get("seed"), errors)
    if errors:
        raise BadRequestError("the sample has errors", errors=errors)
    return DrawInputs(start, end, size, per_agent, service, agent_ids, min_duration,
                      exclude_reviewed, exclude_held, seed)


# -- the draw ---------------------------------------------------------------------------------

def candidates_query(tenant: str, inputs: DrawInputs) -> Any:
    """Every candidate call, all filters in SQL: one row per agent, ``(agent_id, ids)`` with
    the ids (32 hex digits) joined by commas (fetching one row per call costs more in the
    driver than the query does in the database)."""
    conditions = [col(Item.tenant) == tenant, col(Item.status) == ItemStatus.ACTIVE.value,
                  col(Item.started_at) >= inputs.from_, col(Item.started_at) < inputs.to,
                  col(Item.channel) == Channel.CALL.value, col(Item.agent_id).is_not(None)]
    if inputs.service is not None:
        conditions.append(col(Item.service) == inputs.service)
    if inputs.agent_ids is not None:
        conditions.append(col(Item.agent_id).in_(inputs.agent_ids))
    if inputs.min_duration is not None:
        conditions.append(col(Item.duration) >= inputs.min_duration)
    if inputs.exclude_held:
        conditions.append(sa.not_(col(Item.held)))
    if inputs.exclude_reviewed:
        conditions.append(~sa.exists().where(col(Review.item_id) == col(Item.id)))
    # The id as 32 lower-case hex digits on every database (SQLite stores that form).
    hex_id = sa.func.replace(sa.cast(col(Item.id), sa.String), "-", "")
    return (sa.select(col(Item.agent_id), sa.func.aggregate_strings(hex_id, ","))
            .where(*conditions).group_by(col(Item.agent_id)))


def _rank(seed: bytes, value: str) -> bytes:
    return hashlib.sha256(seed + value.encode()).digest()


def allocate(counts: Mapping[str, int], seed: str, *, size: int | None = None,
             per_agent: int | None = None) -> dict[str, int]:
    """How many calls each agent gives: ``min(per_agent, calls)``, or ``size`` shared by
    water-filling, the one-more units going to the agents first in the seed's order."""
    if per_agent is not None:
        return {a: min(per_agent, n) for a, n in counts.items()}
    assert size is not None
    remaining = size
    agents = sorted(counts, key=lambda a: (counts[a], a))
    shares: dict[str, int] = {}
    for i, agent in enumerate(agents):
        left = len(agents) - i
        share = remaining // left
        if counts[agent] <= share:
            shares[agent] = counts[agent]
            remaining -= counts[agent]
            continue
        # Every agent from here has more calls than the even share: each gives it, and the
        # remainder (fewer than those agents) goes one each in the seed's order.
        rest = agents[i:]
        extra = remaining - share * left
        seeded = sorted(rest, key=lambda a: _rank(f"agent:{seed}".encode(), a))
        for n, other in enumerate(seeded):
            shares[other] = share + (1 if n < extra else 0)
        break
    return shares


def choose(candidates: Mapping[str, Sequence[str]], inputs: DrawInputs
           ) -> list[tuple[str, list[str]]]:
    """The draw from each agent's candidate ids (32 hex digits, in any order): per agent
    (agents in order), their chosen calls in rank order, as canonical UUID strings."""
    shares = allocate({a: len(v) for a, v in candidates.items()}, inputs.seed,
                      size=inputs.size, per_agent=inputs.per_agent)
    seed = inputs.seed.encode()
    sha256 = hashlib.sha256

    def rank(item_id: str) -> bytes:
        return sha256(seed + item_id.encode()).digest()

    drawn = []
    for agent in sorted(candidates):
        if shares[agent]:
            ranked = heapq.nsmallest(shares[agent], candidates[agent], key=rank)
            drawn.append((agent, [str(uuid.UUID(hex=i)) for i in ranked]))
    return drawn


async def candidates(db: Database, tenant: str, inputs: DrawInputs) -> dict[str, list[str]]:
    """Each agent's candidate calls (ids as 32 hex digits), in one query."""
    async with db.reader() as session:
        connection = await session.connection()
        rows = (await connection.execute(candidates_query(tenant, inputs))).all()
    return {agent: ids.split(",") for agent, ids in rows if ids}


async def _calls(db: Database, tenant: str, ids: Sequence[str]) -> list[SampledCall]:
    """The calls of ``ids`` (in that order) as they are now."""
    found: dict[uuid.UUID, SampledCall] = {}
    wanted = [uuid.UUID(i) for i in ids]
    async with db.reader() as session:
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start:start + _IN_CHUNK]
            rows = await (await session.connection()).execute(
                sa.select(col(Item.id), col(Item.agent_id), col(Item.started_at),
                          col(Item.duration), col(Item.service), col(Item.status))
                .where(col(Item.tenant) == tenant, col(Item.id).in_(chunk)))
            for row in rows.all():
                found[row[0]] = SampledCall(*row)
    return [found[i] for i in wanted if i in found]


def _counts(calls: Sequence[SampledCall]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in calls:
        key = call.agent_id or ""
        counts[key] = counts.get(key, 0) + 1
    return counts


async def draw(db: Database, *, tenant: str, actor: Actor, raw: Mapping[str, Any],
               now: datetime) -> Drawn:
    """Draw, store and audit a sample. ``raw`` holds the JSON inputs (see ``parse_inputs``);
    ``BadRequestError`` names every bad one and stores nothing."""
    inputs = parse_inputs(raw)
    drawn = choose(await candidates(db, tenant, inputs), inputs)
    total = sum(len(ids) for _, ids in drawn)
    if total > MAX_SIZE:
        raise BadRequestError("the sample is too large", errors=[FieldError(
            "per_agent", f"would draw {total:,} calls; a sample holds at most {MAX_SIZE:,}: "
                         "ask for fewer per agent, or narrow the window or the agents")])
    item_ids = [i for _, ids in drawn for i in ids]
    sample = Sample(id=uuid7(), tenant=tenant, seed=inputs.seed, inputs=inputs.as_json(),
                    item_ids=item_ids, created_by=actor.name, created_at=now)
    async with db.session() as session:
        session.add(sample)
        await audit.append(session, tenant=tenant, at=now, actor=actor.name, role=actor.role,
                           action="sample.draw",
                           detail={"sample_id": str(sample.id), "count": len(item_ids),
                                   "agents": len(drawn)})
        await session.commit()
    calls = await _calls(db, tenant, item_ids)
    return Drawn(sample, calls, {agent: len(ids) for agent, ids in drawn})


# -- reading samples --------------------------------------------------------------------------

async def get_sample(db: Database, tenant: str, sample_id: uuid.UUID) -> Drawn:
    """A stored sample and its calls as they are now (another tenant's is not found)."""
    async with db.reader() as session:
        sample = (await session.exec(select(Sample).where(
            Sample.id == sample_id, Sample.tenant == tenant))).first()
    if sample is None:
        raise NotFoundError(f"no sample {sample_id}")
    calls = await _calls(db, tenant, sample.item_ids)
    return Drawn(sample, calls, _counts(calls))


async def list_samples(db: Database, tenant: str, *, limit: int = DEFAULT_PAGE,
                       cursor: str | None = None) -> SamplePage:
    """The tenant's samples, newest first; the cursor is the id of the last sample of the
    previous page."""
    errors = []
    if not 1 <= limit <= MAX_PAGE:
        errors.append(FieldError("limit", f"must be a whole number from 1 to {MAX_PAGE}"))
    after = parse_uuid(cursor) if cursor else None
    if cursor and after is None:
        errors.append(FieldError("cursor", "is not a cursor from a previous page"))
    if errors:
        raise BadRequestError("the parameters have errors", errors=errors)
    async with db.reader() as session:
        query = select(Sample).where(Sample.tenant == tenant)
        if after is not None:
            last = (await session.exec(select(Sample).where(
                Sample.id == after, Sample.tenant == tenant))).first()
            if last is None:
                raise BadRequestError("the cursor is not valid", errors=[
                    FieldError("cursor", "is not a cursor from a previous page")])
            query = query.where(sa.or_(
                col(Sample.created_at) < last.created_at,
                sa.and_(col(Sample.created_at) == last.created_at, col(Sample.id) < last.id)))
        found = list((await session.exec(
            query.order_by(col(Sample.created_at).desc(), col(Sample.id).desc())
            .limit(limit + 1))).all())
    more = len(found) > limit
    page = found[:limit]
    return SamplePage(page, str(page[-1].id) if more else None)
