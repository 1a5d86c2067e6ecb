"""Evaluation forms and reviews in the archive core: versioning, validation naming every bad
field, the weighted score, one review per reviewer, edits with history, and reviews destroyed
with their item. Runs on SQLite and PostgreSQL."""

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import col, select

from archive import reviews
from archive.db import Database
from archive.errors import BadRequestError, ConflictError, NotFoundError
from archive.models import AuditEvent, Channel, Form, Item, ItemStatus, Review, ReviewVersion
from archive.service import Actor, Archive
from archive.tokens import ensure_tenant
from storage.base import iter_bytes
from tests.archive.test_search import add_item, add_tenant
from tests.conftest import START

T = "camden"
ALICE, BOB = "token:alice", "token:bob"
CRITERIA = [
    {"key": "greeting", "label": "Greets the caller", "weight": 1, "max_score": 5},
    {"key": "accuracy", "label": "Gives accurate advice", "weight": 3, "max_score": 10},
]


async def save(db: Database, name: str = "Calls", criteria: list[dict[str, Any]] | None = None,
               tenant: str = T) -> Form:
    return await reviews.save_form(db, tenant=tenant, actor="token:admin", role="admin",
                                   now=START, form=reviews.parse_form(
                                       {"name": name, "criteria": criteria or CRITERIA}))


async def review(db: Database, item: Item, actor: str = ALICE,
                 **body: Any) -> reviews.ReviewView:
    return await reviews.create_review(
        db, tenant=T, actor=actor, role="quality", now=START, item_id=item.id,
        body={"form": "Calls", "scores": {"greeting": 4, "accuracy": 7}, **body})


def fields(exc: pytest.ExceptionInfo[BadRequestError]) -> set[str]:
    return {e.field for e in exc.value.errors}


async def count(db: Database, model: Any) -> int:
    async with db.reader() as session:
        return len((await session.exec(select(model))).all())


async def audit_actions(db: Database) -> list[tuple[str, dict[str, Any] | None]]:
    async with db.reader() as session:
        rows = (await session.exec(select(AuditEvent).where(AuditEvent.tenant == T)
                                   .order_by(col(AuditEvent.seq)))).all()
    return [(e.action, e.detail) for e in rows]


def test_weighted_score_by_hand() -> None:
    # greeting 4/5 weight 1, accuracy 7/10 weight 3: 100 * (0.8 + 2.1) / 4 = 72.5
    assert reviews.weighted_score(CRITERIA, {"greeting": 4, "accuracy": 7}) == pytest.approx(72.5)
    assert reviews.weighted_score(CRITERIA, {"greeting": 5, "accuracy": 10}) == 100
    assert reviews.weighted_score(CRITERIA, {"greeting": 0, "accuracy": 0}) == 0
    # fractional weights and half marks: 100 * (0.5 * 2.5/5 + 1.5 * 1/2) / 2 = 50
    assert reviews.weighted_score(
        [{"key": "a", "weight": 0.5, "max_score": 5}, {"key": "b", "weight": 1.5, "max_score": 2}],
        {"a": 2.5, "b": 1}) == pytest.approx(50)


async def test_forms_are_versioned_per_tenant_and_name(db: Database) -> None:
    await add_tenant(db, T)
    await add_tenant(db, "barnet")
    first = await save(db)
    second = await save(db, criteria=[*CRITERIA, {"key": "close", "label": "Closes well",
                                                  "weight": 2, "max_score": 3}])
    other = await save(db, "Webchat")
    elsewhere = await save(db, tenant="barnet")
    assert (first.version, second.version, other.version, elsewhere.version) == (1, 2, 1, 1)
    current = await reviews.current_forms(db, T)
    assert [(f.name, f.version) for f in current] == [("Calls", 2), ("Webchat", 1)]
    assert [f.version for f in await reviews.form_versions(db, T, "Calls")] == [1, 2]
    old = await reviews.form_version(db, T, "Calls", 1)
    assert old.criteria == CRITERIA
    with pytest.raises(NotFoundError):
        await reviews.form_version(db, T, "Calls", 3)
    with pytest.raises(NotFoundError):
        await reviews.form_versions(db, "barnet", "Webchat")
    saves = [d for a, d in await audit_actions(db) if a == "form.save"]
    assert len(saves) == 3 and saves[1] == {"form_id": str(second.id), "version": 2,
                                            "criteria": 3}


def test_form_validation_names_every_bad_field() -> None:
    bad = {"name": "", "extra": 1, "criteria": [
        {"key": "Bad Key", "label": "", "weight": 0, "max_score": 0},
        {"key": "ok", "label": "x" * 201, "weight": 1001, "max_score": 2.5, "colour": "red"},
        {"key": "ok", "label": "Repeat", "weight": True, "max_score": 101},
        "not an object",
        {"key": "fine", "label": "Fine", "weight": 0.25, "max_score": 1},
    ]}
    with pytest.raises(BadRequestError) as exc:
        reviews.parse_form(bad)
    assert fields(exc) == {
        "name", "extra", "criteria[0].key", "criteria[0].label", "criteria[0].weight",
        "criteria[0].max_score", "criteria[1].label", "criteria[1].weight",
        "criteria[1].max_score", "criteria[1].colour", "criteria[2].key", "criteria[2].weight",
        "criteria[2].max_score", "criteria[3]"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"criteria": CRITERIA}, "name"),
        ({"name": "a/b", "criteria": CRITERIA}, "name"),
        ({"name": "tab\there", "criteria": CRITERIA}, "name"),
        ({"name": "n" * 101, "criteria": CRITERIA}, "name"),
        ({"name": " padded", "criteria": CRITERIA}, "name"),
        ({"name": "Calls", "criteria": []}, "criteria"),
        ({"name": "Calls", "criteria": {"a": 1}}, "criteria"),
        ({"name": "Calls", "criteria": [CRITERIA[0]] * 51}, "criteria")]
    for body, field in cases:
        with pytest.raises(BadRequestError) as exc:
            reviews.parse_form(body)
        assert fields(exc) == {field}, body
    fifty = [{"key": f"k{n}", "label": "L", "weight": 1000, "max_score": 100} for n in range(50)]
    assert len(reviews.parse_form({"name": "N" * 100, "criteria": fifty}).criteria) == 50


async def test_review_create_edit_history(db: Database) -> None:
    await add_tenant(db, T)
    form1 = await save(db)
    item = await add_item(db, START, agent_id="a1")
    created = await review(db, item, notes="Polite; missed the council tax discount",
                           training_need=True)
    r = created.review
    assert (r.reviewer, r.version, r.form_id, r.training_need) == (ALICE, 1, form1.id, True)
    assert r.score == pytest.approx(72.5)
    assert created.json()["form"] == {"id": str(form1.id), "name": "Calls", "version": 1}

    # the same reviewer again: 409 pointing to PUT; nothing written
    with pytest.raises(ConflictError, match=r"PUT /v1/items/.*/reviews/mine"):
        await review(db, item, scores={"greeting": 1, "accuracy": 1})
    assert await count(db, Review) == 1

    # a new form version: an edit may move to it (with scores for it) by name
    form2 = await save(db, criteria=[{"key": "overall", "label": "Overall", "weight": 1,
                                      "max_score": 4}])
    later = START + timedelta(hours=1)
    edited = await reviews.edit_review(db, tenant=T, actor=ALICE, role="quality", now=later,
                                       item_id=item.id,
                                       body={"form": "Calls", "scores": {"overall": 3}})
    assert edited.review.version == 2 and edited.review.form_id == form2.id
    assert edited.review.score == pytest.approx(75)
    assert edited.review.notes == "Polite; missed the council tax discount"  # kept
    assert edited.review.training_need is True and edited.review.updated_at == later

    # a second edit clears the notes and the flag; same form (not named) and scores kept
    third = await reviews.edit_review(db, tenant=T, actor=ALICE, role="quality",
                                      now=later + timedelta(hours=1), item_id=item.id,
                                      body={"notes": None, "training_need": False})
    assert third.review.version == 3 and third.review.scores == {"overall": 3}
    assert third.review.notes is None and third.review.training_need is False
    # an edit that changes nothing writes no version
    same = await reviews.edit_review(db, tenant=T, actor=ALICE, role="quality",
                                     now=later + timedelta(hours=2), item_id=item.id,
                                     body={"training_need": False})
    assert same.review.version == 3

    history = (await reviews.my_history(db, T, ALICE, item.id)).json()
    assert [(v["version"], v["form"]["version"], v["score"], v["notes"], v["training_need"])
            for v in history["versions"]] == [
        (1, 1, 72.5, "Polite; missed the council tax discount", True),
        (2, 2, 75.0, "Polite; missed the council tax discount", True),
        (3, 2, 75.0, None, False)]
    assert [v["written_at"] for v in history["versions"]] == [
        START.isoformat(), later.isoformat(), (later + timedelta(hours=1)).isoformat()]

    # audit: create and two edits, ids and scores, never the notes
    events = [(a, d) for a, d in await audit_actions(db) if a.startswith("review.")]
    assert [a for a, _ in events] == ["review.create", "review.edit", "review.edit"]
    assert events[0][1] == {"review_id": str(r.id), "form_id": str(form1.id),
                            "form_version": 1, "score": 72.5, "version": 1}
    assert "Polite" not in repr(await audit_actions(db))


async def test_only_the_author_edits_and_reads_history(db: Database) -> None:
    await add_tenant(db, T)
    await save(db)
    item = await add_item(db, START)
    await review(db, item)
    with pytest.raises(NotFoundError, match="no review"):
        await reviews.edit_review(db, tenant=T, actor=BOB, role="quality", now=START,
                                  item_id=item.id, body={"training_need": True})
    with pytest.raises(NotFoundError):
        await reviews.my_history(db, T, BOB, item.id)
    # Bob writes his own: two reviews of the item, Alice's untouched
    await review(db, item, BOB, scores={"greeting": 5, "accuracy": 10})
    listed = await reviews.item_reviews(db, T, item.id)
    assert [(v.review.reviewer, v.review.version, round(v.review.score, 2))
            for v in listed] == [(ALICE, 1, 72.5), (BOB, 1, 100.0)]
    assert await reviews.item_reviews(db, "barnet", item.id) == []


async def test_bad_reviews_name_every_field_and_leave_nothing(db: Database) -> None:
    await add_tenant(db, T)
    form = await save(db)
    item = await add_item(db, START)
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"scores": {"greeting": 6, "accuracy": -1, "speed": 3}, "notes": "x" * 10_001,
          "training_need": "yes", "colour": 1},
         {"scores.greeting", "scores.accuracy", "scores.speed", "notes", "training_need",
          "colour"}),
        ({"scores": {"greeting": 1}}, {"scores.accuracy"}),
        ({"scores": {"greeting": True, "accuracy": "7"}}, {"scores.greeting", "scores.accuracy"}),
        ({"form": "Nope", "scores": {}}, {"form"}),
        ({"form": None, "form_id": str(form.id), "scores": [1]}, {"scores"}),
        ({"form": None, "form_id": str(uuid.uuid4()), "scores": {}}, {"form_id"}),
        ({"form": None, "form_id": "not-a-uuid"}, {"form_id"}),
        ({"form": None}, {"form"}),
        ({"form_id": str(form.id)}, {"form_id"}),  # both form and form_id
    ]
    for body, expected in cases:
        with pytest.raises(BadRequestError) as exc:
            await review(db, item, **body)
        assert fields(exc) == expected, body
    assert await count(db, Review) == 0
    # a form of another tenant is not found by id
    await add_tenant(db, "barnet")
    theirs = await save(db, tenant="barnet")
    with pytest.raises(BadRequestError) as exc:
        await review(db, item, form=None, form_id=str(theirs.id))
    assert fields(exc) == {"form_id"}
    # the right form by id works, and the edit checks scores against the review's form
    await review(db, item, form=None, form_id=str(form.id))
    with pytest.raises(BadRequestError) as exc:
        await reviews.edit_review(db, tenant=T, actor=ALICE, role="quality", now=START,
                                  item_id=item.id, body={"scores": {"greeting": 9}})
    assert fields(exc) == {"scores.greeting", "scores.accuracy"}
    with pytest.raises(BadRequestError) as exc:
        await reviews.edit_review(db, tenant=T, actor=ALICE, role="quality", now=START,
                                  item_id=item.id, body={"form": "Calls"})
    assert fields(exc) == {"scores"}
    assert await count(db, ReviewVersion) == 0


async def test_only_live_calls_of_the_tenant_are_reviewed(db: Database) -> None:
    await add_tenant(db, T)
    await add_tenant(db, "barnet")
    await save(db)
    erased = await add_item(db, START, status=ItemStatus.ERASED)
    pending = await add_item(db, START, status=ItemStatus.PENDING)
    theirs = await add_item(db, START, tenant="barnet")
    with pytest.raises(ConflictError, match="erased"):
        await review(db, erased)
    for item in (pending, theirs):
        with pytest.raises(NotFoundError):
            await review(db, item)
    with pytest.raises(NotFoundError):
        await reviews.create_review(db, tenant=T, actor=ALICE, role="quality", now=START,
                                    item_id=uuid.uuid4(), body={})
    assert await count(db, Review) == 0


async def test_erasure_deletes_reviews_and_their_history(archive: Archive) -> None:
    db = archive.db
    async with db.session() as session:
        await ensure_tenant(session, T, START)
        await session.commit()
    await save(db)
    kept, erased = [await archive.put(
        tenant=T, channel=Channel.CALL, external_id=str(uuid.uuid4()), started_at=START,
        media_type="audio/wav", chunks=iter_bytes(b"RIFF...."), actor=Actor("t", "ingest"),
        fields={"agent_id": "a1"}) for _ in range(2)]
    for item in (kept, erased):
        await review(db, item)
        await review(db, item, BOB)
        await reviews.edit_review(db, tenant=T, actor=ALICE, role="quality", now=START,
                                  item_id=item.id, body={"training_need": True})
    assert (await count(db, Review), await count(db, ReviewVersion)) == (4, 2)
    await archive.destroy(T, erased.id, reason="erasure", actor=Actor("dpo", "privacy"))
    async with db.reader() as session:
        left = (await session.exec(select(Review.item_id))).all()
        versions = (await session.exec(select(ReviewVersion.review_id))).all()
        kept_ids = (await session.exec(select(Review.id).where(
            Review.item_id == kept.id))).all()
    assert set(left) == {kept.id} and len(left) == 2
    assert len(versions) == 1 and set(versions) <= set(kept_ids)
    # and the destroyed call can no longer be reviewed
    with pytest.raises(ConflictError):
        await review(db, erased, "token:carol")
