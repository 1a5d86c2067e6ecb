"""Quality monitoring: versioned evaluation forms, reviews of calls and the quality summary.

A form is a named list of criteria, each with a weight and a maximum score; saving a name again
writes its next version, and a review keeps the version it was scored against. A review is one
monitor's (token's) scores for one call, with notes and a training-need flag: one per reviewer
per item, edited only by its author, each edit keeping the version it replaces in
``review_versions``. Its weighted score is ``100 * sum(weight * score / max_score) /
sum(weight)``, from 0 to 100, stored on the review.

Reviews are of live calls only: the item row is locked while a review is written, so a review
cannot slip in beside an erasure or purge (which deletes reviews with ``delete_reviews`` in its
own transaction). Audit details carry ids, form versions and scores, never notes.

This module sits in ``archive`` and ``archive.service`` imports it (for ``delete_reviews``), so
it takes the database and the time from its callers rather than an ``Archive``.
"""

import math
import re
import statistics
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from archive import audit
from archive.db import Database
from archive.errors import BadRequestError, ConflictError, FieldError, NotFoundError
from archive.ids import parse_uuid, uuid7
from archive.models import Channel, Form, Item, ItemStatus, Review, ReviewVersion

MAX_NAME = 100
MAX_CRITERIA = 50
MAX_LABEL = 200
MAX_WEIGHT = 1000
MAX_MAX_SCORE = 100
MAX_NOTES = 10_000
MAX_CALIBRATION = 500  # items listed in a summary's calibration section
KEY = re.compile(r"[a-z0-9_-]{1,40}")
_FORM_FIELDS = ("name", "criteria")
_CRITERION_FIELDS = ("key", "label", "weight", "max_score")
_REVIEW_FIELDS = ("form", "form_id", "scores", "notes", "training_need")
_CALL, _ACTIVE = Channel.CALL.value, ItemStatus.ACTIVE.value
_IN_CHUNK = 500


# -- forms -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FormInput:
    """A validated form to save."""

    name: str
    criteria: list[dict[str, Any]]


def _unknown(body: dict[str, Any], known: Sequence[str], prefix: str = "") -> list[FieldError]:
    return [FieldError(f"{prefix}{k}", "is not a known field")
            for k in sorted(set(body) - set(known), key=str)]


def _is_number(value: Any) -> TypeGuard[int | float]:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def name_errors(name: Any, field: str = "name") -> list[FieldError]:
    """What is wrong with a form name (1 to 100 printable characters, no ``/``)."""
    if not isinstance(name, str):
        return [FieldError(field, "must be a string")]
    if not 1 <= len(name.strip()) <= MAX_NAME or name != name.strip():
        return [FieldError(field, f"must be 1 to {MAX_NAME} characters, without leading or "
                                  "trailing spaces")]
    if not name.isprintable() or "/" in name:
        return [FieldError(field, "must be printable characters only, without /")]
    return []


def _criterion(n: int, raw: Any, seen: set[str]) -> tuple[dict[str, Any] | None,
                                                          list[FieldError]]:
    at = f"criteria[{n}]"
    if not isinstance(raw, dict):
        return None, [FieldError(at, "must be an object with key, label, weight, max_score")]
    errors = _unknown(raw, _CRITERION_FIELDS, f"{at}.")
    key, label = raw.get("key"), raw.get("label")
    weight, max_score = raw.get("weight"), raw.get("max_score")
    if not isinstance(key, str) or not KEY.fullmatch(key):
        errors.append(FieldError(f"{at}.key", "must be 1 to 40 of a-z, 0-9, _ and -"))
    elif key in seen:
        errors.append(FieldError(f"{at}.key", f"repeats the key {key!r}"))
    else:
        seen.add(key)
    if not isinstance(label, str) or not 1 <= len(label.strip()) <= MAX_LABEL:
        errors.append(FieldError(f"{at}.label", f"must be a string of 1 to {MAX_LABEL} "
                                                "characters"))
    if not _is_number(weight) or not 0 < weight <= MAX_WEIGHT:
        errors.append(FieldError(f"{at}.weight", f"must be a number above 0, at most "
                                                 f"{MAX_WEIGHT}"))
    if (not isinstance(max_score, int) or isinstance(max_score, bool)
            or not 1 <= max_score <= MAX_MAX_SCORE):
        errors.append(FieldError(f"{at}.max_score", f"must be a whole number from 1 to "
                                                    f"{MAX_MAX_SCORE}"))
    if errors:
        return None, errors
    assert isinstance(label, str)
    return {"key": key, "label": label.strip(), "weight": weight, "max_score": max_score}, []


def parse_form(body: dict[str, Any]) -> FormInput:
    """A form from a request body; ``BadRequestError`` naming every bad field."""
    errors = _unknown(body, _FORM_FIELDS)
    if "name" not in body:
        errors.append(FieldError("name", "is required"))
    else:
        errors += name_errors(body["name"])
    raw = body.get("criteria")
    criteria: list[dict[str, Any]] = []
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CRITERIA:
        errors.append(FieldError("criteria", f"must be a list of 1 to {MAX_CRITERIA} criteria"))
    else:
        seen: set[str] = set()
        for n, item in enumerate(raw):
            criterion, wrong = _criterion(n, item, seen)
            errors += wrong
            if criterion is not None:
                criteria.append(criterion)
    if errors:
        raise BadRequestError("the form has errors", errors=errors)
    return FormInput(body["name"], criteria)


async def _current(session: AsyncSession, tenant: str, name: str) -> Form | None:
    return (await session.exec(
        select(Form).where(Form.tenant == tenant, Form.name == name)
        .order_by(col(Form.version).desc()).limit(1))).first()


async def save_form(db: Database, *, tenant: str, actor: str, role: str, now: datetime,
                    form: FormInput) -> Form:
    """Write version 1 of a new name, or the next version of an existing one (audited
    ``form.save``). Two saves of one name at the same moment: one wins, the other is told to
    try again (409)."""
    async with db.session() as session:
        current = await _current(session, tenant, form.name)
        row = Form(id=uuid7(), tenant=tenant, name=form.name,
                   version=current.version + 1 if current else 1, criteria=form.criteria,
                   created_by=actor, created_at=now)
        session.add(row)
        try:
            await session.flush()
        except IntegrityError:
            raise ConflictError(f"form {form.name!r} was saved by someone else at the same "
                                "time; read it and try again") from None
        await audit.append(session, tenant=tenant, at=now, actor=actor, role=role,
                           action="form.save",
                           detail={"form_id": str(row.id), "version": row.version,
                                   "criteria": len(row.criteria)})
        await session.commit()
    return row


async def current_forms(db: Database, tenant: str) -> list[Form]:
    """The current (highest) version of each of the tenant's forms, by name."""
    top = (select(col(Form.name), sa.func.max(Form.version).label("version"))
           .where(Form.tenant == tenant).group_by(col(Form.name)).subquery())
    async with db.reader() as session:
        return list((await session.exec(
            select(Form).join(top, sa.and_(col(Form.name) == top.c.name,
                                           col(Form.version) == top.c.version))
            .where(Form.tenant == tenant).order_by(col(Form.name)))).all())


async def form_versions(db: Database, tenant: str, name: str) -> list[Form]:
    """Every version of a form, oldest first; ``NotFoundError`` when there is none."""
    async with db.reader() as session:
        rows = list((await session.exec(
            select(Form).where(Form.tenant == tenant, Form.name == name)
            .order_by(col(Form.version)))).all())
    if not rows:
        raise NotFoundError(f"no form {name!r}")
    return rows


async def form_version(db: Database, tenant: str, name: str, version: int) -> Form:
    async with db.reader() as session:
        row = (await session.exec(select(Form).where(
            Form.tenant == tenant, Form.name == name, Form.version == version))).first()
    if row is None:
        raise NotFoundError(f"no version {version} of form {name!r}")
    return row


def form_json(form: Form) -> dict[str, Any]:
    return {"id": str(form.id), "name": form.name, "version": form.version,
            "criteria": form.criteria, "created_by": form.created_by,
            "created_at": form.created_at.isoformat()}


# -- reviews -----------------------------------------------------------------------------------

def weighted_score(criteria: Sequence[dict[str, Any]], scores: dict[str, Any]) -> float:
    """``100 * sum(weight * score / max_score) / sum(weight)``: 0 to 100."""
    total = sum(float(c["weight"]) for c in criteria)
    got = sum(float(c["weight"]) * float(scores[c["key"]]) / c["max_score"] for c in criteria)
    return float(100 * got / total)


@dataclass(frozen=True)
class ReviewInput:
    """A review body, checked for shape (the scores are checked against the form later).
    ``None`` means absent; ``notes`` absent is ``...`` so that ``null`` can clear them."""

    form: str | None
    form_id: uuid.UUID | None
    scores: dict[str, Any] | None
    notes: Any
    training_need: bool | None


def parse_review(body: dict[str, Any], *, edit: bool) -> tuple[ReviewInput, list[FieldError]]:
    """The shape of a review body, with what is wrong in it. A new review needs a form (by
    ``form`` name or ``form_id``) and ``scores``; an edit may leave out any field (kept)."""
    errors = _unknown(body, _REVIEW_FIELDS)
    form, form_id = body.get("form"), None
    if form is not None:
        errors += name_errors(form, "form")
    if body.get("form_id") is not None:
        raw = body["form_id"]
        form_id = parse_uuid(raw) if isinstance(raw, str) else None
        if form_id is None:
            errors.append(FieldError("form_id", "is not a form id (a UUID)"))
        elif form is not None:
            errors.append(FieldError("form_id", "give form (a name) or form_id, not both"))
    elif form is None and not edit:
        errors.append(FieldError("form", "is required (the form's name), or form_id"))
    scores = body.get("scores")
    if scores is None and (not edit or form is not None or "form_id" in body):
        errors.append(FieldError("scores", "is required"))
    elif scores is not None and not isinstance(scores, dict):
        errors.append(FieldError("scores", "must be an object of criterion key to score"))
        scores = None
    notes: Any = body.get("notes", ...)
    if notes is not ... and notes is not None and (
            not isinstance(notes, str) or len(notes) > MAX_NOTES):
        errors.append(FieldError("notes", f"must be text of at most {MAX_NOTES} characters"))
    need = body.get("training_need")
    if need is not None and not isinstance(need, bool):
        errors.append(FieldError("training_need", "must be true or false"))
        need = None
    if notes is ... and not edit:
        notes = None
    return ReviewInput(form if isinstance(form, str) else None, form_id, scores,
                       notes, need), errors


def score_errors(form: Form, scores: dict[str, Any]) -> list[FieldError]:
    """Every criterion scored, each from 0 to its maximum; no other keys."""
    errors = []
    keys = {c["key"] for c in form.criteria}
    for c in form.criteria:
        value = scores.get(c["key"])
        if c["key"] not in scores:
            errors.append(FieldError(f"scores.{c['key']}", "is required"))
        elif not _is_number(value) or not 0 <= value <= c["max_score"]:
            errors.append(FieldError(f"scores.{c['key']}",
                                     f"must be a number from 0 to {c['max_score']}"))
    errors += [FieldError(f"scores.{k}", f"is not a criterion of form {form.name!r} "
                                         f"version {form.version}")
               for k in sorted(set(scores) - keys, key=str)]
    return errors


@dataclass(frozen=True)
class ReviewView:
    """A review with the form version it was scored against."""

    review: Review
    form: Form

    def json(self) -> dict[str, Any]:
        r = self.review
        return {"id": str(r.id), "item_id": str(r.item_id), "reviewer": r.reviewer,
                "form": _form_ref(self.form), "scores": r.scores,
                "score": round(r.score, 2), "notes": r.notes,
                "training_need": r.training_need, "version": r.version,
                "created_at": r.created_at.isoformat(), "updated_at": r.updated_at.isoformat()}


def _form_ref(form: Form) -> dict[str, Any]:
    return {"id": str(form.id), "name": form.name, "version": form.version}


async def _live_call(session: AsyncSession, tenant: str, item_id: uuid.UUID) -> Item:
    """The item, locked against a concurrent destruction, if it is a live call of the
    tenant."""
    item = (await session.exec(
        select(Item).where(Item.id == item_id).with_for_update())).first()
    if item is None or item.tenant != tenant or item.status == ItemStatus.PENDING.value:
        raise NotFoundError(f"no item {item_id}")
    check_reviewable(item)
    return item


def check_reviewable(item: Item) -> None:
    """Only live calls are reviewed: 409 for a destroyed or anonymised item. (Chats are
    refused before this, by role rules.)"""
    if item.status != _ACTIVE:
        raise ConflictError(f"item {item.id} is {item.status}: only live calls are reviewed")


async def _resolve_form(session: AsyncSession, tenant: str, given: ReviewInput,
                        errors: list[FieldError]) -> Form | None:
    if given.form_id is not None:
        form = (await session.exec(select(Form).where(Form.id == given.form_id,
                                                      Form.tenant == tenant))).first()
        if form is None:
            errors.append(FieldError("form_id", "is not a form of this tenant"))
        return form
    if given.form is not None:
        form = await _current(session, tenant, given.form)
        if form is None:
            errors.append(FieldError("form", f"no form named {given.form!r}"))
        return form
    return None


def _raise(errors: list[FieldError]) -> None:
    if errors:
        raise BadRequestError("the review has errors", errors=errors)


async def create_review(db: Database, *, tenant: str, actor: str, role: str, now: datetime,
                        item_id: uuid.UUID, body: dict[str, Any]) -> ReviewView:
    """The caller's review of a live call (audited ``review.create``); 409 if they already
    reviewed it (they edit it with PUT)."""
    given, errors = parse_review(body, edit=False)
    async with db.session() as session:
        await _live_call(session, tenant, item_id)
        form = await _resolve_form(session, tenant, given, errors)
        if form is not None and given.scores is not None:
            errors += score_errors(form, given.scores)
        _raise(errors)
        assert form is not None and given.scores is not None
        mine = (await session.exec(select(Review.id).where(
            Review.item_id == item_id, Review.reviewer == actor))).first()
        if mine is not None:
            raise ConflictError(_ALREADY.format(item_id=item_id))
        review = Review(id=uuid7(), tenant=tenant, item_id=item_id, reviewer=actor,
                        form_id=form.id, scores=given.scores,
                        score=weighted_score(form.criteria, given.scores),
                        notes=given.notes, training_need=bool(given.training_need),
                        version=1, created_at=now, updated_at=now)
        session.add(review)
        try:
            await session.flush()
        except IntegrityError:
            raise ConflictError(_ALREADY.format(item_id=item_id)) from None
        await audit.append(session, tenant=tenant, at=now, actor=actor, role=role,
                           action="review.create", item_id=item_id,
                           detail=_detail(review, form))
        await session.commit()
    return ReviewView(review, form)


_ALREADY = ("you have already reviewed item {item_id}; edit your review with "
            "PUT /v1/items/{item_id}/reviews/mine")


def _detail(review: Review, form: Form) -> dict[str, Any]:
    return {"review_id": str(review.id), "form_id": str(form.id), "form_version": form.version,
            "score": round(review.score, 2), "version": review.version}


async def edit_review(db: Database, *, tenant: str, actor: str, role: str, now: datetime,
                      item_id: uuid.UUID, body: dict[str, Any]) -> ReviewView:
    """Edit the caller's own review of a live call (``NotFoundError`` when they have none:
    another reviewer's review is not theirs to edit). Fields left out keep their values; a
    new form needs new scores. The version replaced goes to ``review_versions``; an edit that
    changes nothing writes nothing. Audited ``review.edit``."""
    given, errors = parse_review(body, edit=True)
    async with db.session() as session:
        await _live_call(session, tenant, item_id)
        review = (await session.exec(select(Review).where(
            Review.item_id == item_id, Review.reviewer == actor).with_for_update())).first()
        if review is None:
            raise NotFoundError(f"you have no review of item {item_id}; write one with "
                                f"POST /v1/items/{item_id}/reviews")
        form = await _resolve_form(session, tenant, given, errors)
        if form is None and not errors:
            form = (await session.exec(select(Form).where(Form.id == review.form_id))).one()
        scores = given.scores if given.scores is not None else review.scores
        if form is not None:
            errors += score_errors(form, scores)
        _raise(errors)
        assert form is not None
        notes = review.notes if given.notes is ... else given.notes
        need = review.training_need if given.training_need is None else given.training_need
        if (form.id, scores, notes, need) == (review.form_id, review.scores, review.notes,
                                              review.training_need):
            return ReviewView(review, form)
        session.add(ReviewVersion(
            id=uuid7(), review_id=review.id, version=review.version, form_id=review.form_id,
            scores=review.scores, score=review.score, notes=review.notes,
            training_need=review.training_need, written_at=review.updated_at))
        review.form_id, review.scores, review.notes, review.training_need = (
            form.id, scores, notes, need)
        review.score = weighted_score(form.criteria, scores)
        review.version += 1
        review.updated_at = now
        session.add(review)
        await session.flush()
        await audit.append(session, tenant=tenant, at=now, actor=actor, role=role,
                           action="review.edit", item_id=item_id, detail=_detail(review, form))
        await session.commit()
    return ReviewView(review, form)


async def _forms(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, Form]:
    if not ids:
        return {}
    rows = (await session.exec(select(Form).where(col(Form.id).in_(sorted(ids))))).all()
    return {f.id: f for f in rows}


async def item_reviews(db: Database, tenant: str, item_id: uuid.UUID) -> list[ReviewView]:
    """The item's reviews, oldest first."""
    async with db.reader() as session:
        rows = list((await session.exec(
            select(Review).where(Review.item_id == item_id, Review.tenant == tenant)
            .order_by(col(Review.created_at), col(Review.id)))).all())
        forms = await _forms(session, {r.form_id for r in rows})
    return [ReviewView(r, forms[r.form_id]) for r in rows]


@dataclass(frozen=True)
class History:
    """Every version of one review, oldest first (the last is the current one)."""

    review: Review
    versions: list[tuple[int, Form, dict[str, Any], float, str | None, bool, datetime]]

    def json(self) -> dict[str, Any]:
        return {"id": str(self.review.id), "item_id": str(self.review.item_id),
                "reviewer": self.review.reviewer, "versions": [
                    {"version": v, "form": _form_ref(f), "scores": s, "score": round(sc, 2),
                     "notes": n, "training_need": t, "written_at": at.isoformat()}
                    for v, f, s, sc, n, t, at in self.versions]}


async def my_history(db: Database, tenant: str, actor: str, item_id: uuid.UUID) -> History:
    """The caller's review of the item in all its versions; ``NotFoundError`` if none."""
    async with db.reader() as session:
        review = (await session.exec(select(Review).where(
            Review.item_id == item_id, Review.reviewer == actor,
            Review.tenant == tenant))).first()
        if review is None:
            raise NotFoundError(f"you have no review of item {item_id}")
        old = list((await session.exec(
            select(ReviewVersion).where(ReviewVersion.review_id == review.id)
            .order_by(col(ReviewVersion.version)))).all())
        forms = await _forms(session, {review.form_id} | {v.form_id for v in old})
    versions = [(v.version, forms[v.form_id], v.scores, v.score, v.notes, v.training_need,
                 v.written_at) for v in old]
    versions.append((review.version, forms[review.form_id], review.scores, review.score,
                     review.notes, review.training_need, review.updated_at))
    return History(review, versions)


async def reviewers_of(db: Database, tenant: str, ids: Iterable[str]) -> dict[str, set[str]]:
    """Who has reviewed each of ``ids`` (canonical UUID strings): item id -> reviewers. Reads
    ids only (never scores or notes), to show a sample's progress."""
    wanted = sorted({uuid.UUID(i) for i in ids})
    found: dict[str, set[str]] = {}
    async with db.reader() as session:
        for start in range(0, len(wanted), _IN_CHUNK):
            rows = (await session.exec(
                select(Review.item_id, Review.reviewer).where(
                    Review.tenant == tenant,
                    col(Review.item_id).in_(wanted[start:start + _IN_CHUNK])))).all()
            for item_id, reviewer in rows:
                found.setdefault(str(item_id), set()).add(reviewer)
    return found


async def delete_reviews(session: AsyncSession, item_ids: Sequence[uuid.UUID]) -> None:
    """Delete the reviews of destroyed items, with their history, in the caller's
    transaction (a review's notes and scores are about the contact: they go with it)."""
    if not item_ids:
        return
    reviews = select(Review.id).where(col(Review.item_id).in_(list(item_ids)))
    await session.exec(sa.delete(ReviewVersion).where(col(ReviewVersion.review_id).in_(reviews))
                       .execution_options(synchronize_session=False))
    await session.exec(sa.delete(Review).where(col(Review.item_id).in_(list(item_ids)))
                       .execution_options(synchronize_session=False))


# -- the quality summary -----------------------------------------------------------------------

@dataclass(frozen=True)
class AgentFigures:
    agent_id: str
    calls_handled: int
    calls_reviewed: int
    reviews: int
    mean_score: float | None
    spread: float | None  # population standard deviation of review scores; None below 2
    training_needs: int

    def json(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "calls_handled": self.calls_handled,
                "calls_reviewed": self.calls_reviewed, "reviews": self.reviews,
                "mean_score": _r(self.mean_score), "spread": _r(self.spread),
                "training_needs": self.training_needs}


@dataclass(frozen=True)
class Calibration:
    """A call reviewed by two or more monitors: their scores and how far apart they are."""

    item_id: uuid.UUID
    agent_id: str
    started_at: datetime
    scores: list[tuple[str, float, uuid.UUID]]  # reviewer, weighted score, form version id

    @property
    def range(self) -> float:
        values = [s for _, s, _ in self.scores]
        return max(values) - min(values)

    @property
    def stddev(self) -> float:
        return statistics.pstdev([s for _, s, _ in self.scores])

    def json(self) -> dict[str, Any]:
        return {"item_id": str(self.item_id), "agent_id": self.agent_id,
                "started_at": self.started_at.isoformat(),
                "reviews": [{"reviewer": r, "score": round(s, 2), "form_id": str(f)}
                            for r, s, f in self.scores],
                "range": round(self.range, 2), "stddev": round(self.stddev, 2)}


@dataclass(frozen=True)
class Summary:
    start: datetime
    end: datetime
    service: str | None
    agents: list[AgentFigures]
    calibration: list[Calibration]
    calibration_truncated: bool

    def json(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(),
                "service": self.service, "agents": [a.json() for a in self.agents],
                "calibration": [c.json() for c in self.calibration],
                "calibration_truncated": self.calibration_truncated}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _calls(tenant: str, start: datetime, end: datetime, service: str | None) -> list[Any]:
    where = [Item.tenant == tenant, Item.channel == _CALL, Item.status == _ACTIVE,
             col(Item.agent_id).is_not(None), col(Item.started_at) >= start,
             col(Item.started_at) < end]
    if service is not None:
        where.append(Item.service == service)
    return where


async def summary(db: Database, tenant: str, *, start: datetime, end: datetime,
                  service: str | None = None,
                  calibration_limit: int = MAX_CALIBRATION) -> Summary:
    """Per agent with live calls started in ``[start, end)`` (of ``service``, if given): calls
    handled, calls reviewed, reviews, mean weighted score and its population standard
    deviation (None with fewer than two reviews), training needs flagged; and the calls in
    range reviewed by two or more monitors (the first ``calibration_limit`` by start)."""
    calls = _calls(tenant, start, end, service)
    joined = col(Review.item_id) == col(Item.id)
    agent = col(Item.agent_id)
    async with db.reader() as session:
        handled: dict[str, int] = {str(a): int(n) for a, n in (await session.exec(
            select(agent, sa.func.count()).where(*calls).group_by(agent))).all()}
        connection = await session.connection()  # wide rows: plain SQLAlchemy
        reviewed = (await connection.execute(
            sa.select(agent, sa.func.count(sa.distinct(col(Review.item_id))),
                   sa.func.count(col(Review.id)), sa.func.avg(col(Review.score)),
                   sa.func.avg(col(Review.score) * col(Review.score)),
                   sa.func.sum(sa.case((col(Review.training_need), 1), else_=0)))
            .join(Review, joined).where(*calls, col(Review.tenant) == tenant)
            .group_by(agent))).all()
        multi = list((await session.exec(
            select(col(Item.id)).join(Review, joined).where(*calls, Review.tenant == tenant)
            .group_by(col(Item.id), col(Item.started_at))
            .having(sa.func.count(col(Review.id)) >= 2)
            .order_by(col(Item.started_at), col(Item.id)).limit(calibration_limit + 1))).all())
        truncated = len(multi) > calibration_limit
        multi = multi[:calibration_limit]
        rows: list[Any] = []
        for n in range(0, len(multi), _IN_CHUNK):
            rows += (await connection.execute(
                sa.select(col(Item.id), agent, col(Item.started_at), col(Review.reviewer),
                       col(Review.score), col(Review.form_id))
                .join(Review, joined).where(col(Item.id).in_(multi[n:n + _IN_CHUNK]))
                .order_by(col(Item.started_at), col(Item.id), col(Review.reviewer)))).all()
    figures = {a: AgentFigures(a, handled.get(a, 0), 0, 0, None, None, 0) for a in handled}
    for a, items, count, mean, mean_sq, needs in reviewed:
        spread = (math.sqrt(max(0.0, float(mean_sq) - float(mean) ** 2)) if count >= 2
                  else None)
        figures[a] = AgentFigures(a, handled.get(a, 0), int(items), int(count), float(mean),
                                  spread, int(needs or 0))
    calibration: dict[uuid.UUID, Calibration] = {}
    for item_id, a, started, reviewer, score, form_id in rows:
        entry = calibration.setdefault(item_id, Calibration(item_id, a, started, []))
        entry.scores.append((reviewer, float(score), form_id))
    return Summary(start, end, service, [figures[a] for a in sorted(figures)],
                   list(calibration.values()), truncated)
