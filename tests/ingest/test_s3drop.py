"""The S3-drop importer against a real moto server, with real audio and the real Archive."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.session import get_session
from sqlmodel import select

from archive.models import Item, ItemStatus
from archive.service import Archive
from ingest.s3drop import parse_s3_url, run_s3_drop
from ingest.service import Ingestor
from storage.s3 import create_bucket
from tests.ingest import media
from tests.ingest.conftest import TENANT, new_ingestor

PREFIX = "pbx/incoming/"
S3 = Any  # aiobotocore clients carry no types


def meta(external_id: str | None = None, **extra: Any) -> bytes:
    data: dict[str, Any] = {"started_at": "2026-11-20T10:00:00Z", "direction": "outbound",
                            **extra}
    if external_id is not None:
        data["external_id"] = external_id
    return json.dumps(data).encode()


@pytest.fixture
async def bucket(moto_endpoint: str) -> str:
    name = f"drop-{uuid.uuid4().hex[:12]}"
    await create_bucket(name, endpoint_url=moto_endpoint, retries=1)
    return name


@pytest.fixture
async def s3(moto_endpoint: str) -> AsyncIterator[S3]:
    async with get_session().create_client("s3", endpoint_url=moto_endpoint,
                                           region_name="eu-west-2") as client:
        yield client


async def put(s3: S3, bucket: str, name: str, body: bytes, *, prefix: str = PREFIX,
              tags: str | None = None) -> None:
    args: dict[str, Any] = {"Bucket": bucket, "Key": prefix + name, "Body": body}
    if tags:
        args["Tagging"] = tags
    await s3.put_object(**args)


async def keys(s3: S3, bucket: str) -> list[str]:
    reply = await s3.list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in reply.get("Contents", []))


async def tags(s3: S3, bucket: str, key: str) -> dict[str, str]:
    reply = await s3.get_object_tagging(Bucket=bucket, Key=key)
    return {t["Key"]: t["Value"] for t in reply["TagSet"]}


async def read_json(s3: S3, bucket: str, key: str) -> Any:
    reply = await s3.get_object(Bucket=bucket, Key=key)
    async with reply["Body"] as body:
        return json.loads(await body.read())


async def items(archive: Archive) -> list[Item]:
    async with archive.db.session() as session:
        return list((await session.exec(select(Item))).all())


def test_s3_urls() -> None:
    assert parse_s3_url("s3://drop/pbx/incoming/") == ("drop", "pbx/incoming/")
    assert parse_s3_url("s3://drop/pbx") == ("drop", "pbx/")
    assert parse_s3_url("s3://drop") == ("drop", "")


async def test_pairs_archived_and_deleted_failures_tagged(
    ingestor: Ingestor, bucket: str, s3: S3, moto_endpoint: str,
) -> None:
    audio = media.wav(1.0)
    await put(s3, bucket, "rec-1.wav", audio)
    await put(s3, bucket, "rec-1.json", meta("call-1"))
    await put(s3, bucket, "rec-2.wav", audio)
    await put(s3, bucket, "rec-2.json", meta())  # external_id defaults to the name
    await put(s3, bucket, "bad.wav", audio)
    await put(s3, bucket, "bad.json", meta("call-3", direction="sideways"))
    await put(s3, bucket, "text.wav", b"not audio " * 500)
    await put(s3, bucket, "text.json", meta("call-4"))
    await put(s3, bucket, "lone.wav", audio)
    await put(s3, bucket, "rec-9.wav", audio, prefix=PREFIX + "nested/")  # not directly under
    await put(s3, bucket, "rec-9.json", meta("call-9"), prefix=PREFIX + "nested/")
    await put(s3, bucket, "rec-8.wav", audio, prefix="elsewhere/")
    await put(s3, bucket, "rec-8.json", meta("call-8"), prefix="elsewhere/")

    report = await run_s3_drop(ingestor, f"s3://{bucket}/{PREFIX}", tenant=TENANT,
                               endpoint_url=moto_endpoint, once=True, orphan_grace=0)

    assert (report.archived, report.already_archived, report.failed) == (2, 0, 3)
    stored = {i.external_id: i for i in await items(ingestor.archive)}
    assert set(stored) == {"call-1", "rec-2"}
    assert all(i.status == ItemStatus.ACTIVE.value for i in stored.values())
    assert await keys(s3, bucket) == sorted([
        "elsewhere/rec-8.json", "elsewhere/rec-8.wav",
        f"{PREFIX}bad.error.json", f"{PREFIX}bad.json", f"{PREFIX}bad.wav",
        f"{PREFIX}lone.error.json", f"{PREFIX}lone.wav",
        f"{PREFIX}nested/rec-9.json", f"{PREFIX}nested/rec-9.wav",
        f"{PREFIX}text.error.json", f"{PREFIX}text.json", f"{PREFIX}text.wav"])
    for key in ("bad.json", "bad.wav", "text.json", "text.wav", "lone.wav"):
        assert await tags(s3, bucket, PREFIX + key) == {"archive-status": "failed"}
    bad = await read_json(s3, bucket, f"{PREFIX}bad.error.json")
    assert bad["status"] == 400
    assert [e["field"] for e in bad["errors"]] == ["direction"]
    assert (await read_json(s3, bucket, f"{PREFIX}text.error.json"))["status"] == 415

    # Failed pairs are skipped by later passes, until they are uploaded again.
    again = await run_s3_drop(ingestor, f"s3://{bucket}/{PREFIX}", tenant=TENANT,
                              endpoint_url=moto_endpoint, once=True, orphan_grace=0)
    assert (again.archived, again.failed) == (0, 0)
    await put(s3, bucket, "bad.json", meta("call-3"))
    await put(s3, bucket, "bad.wav", audio)
    fixed = await run_s3_drop(ingestor, f"s3://{bucket}/{PREFIX}", tenant=TENANT,
                              endpoint_url=moto_endpoint, once=True)
    assert fixed.archived == 1
    assert f"{PREFIX}bad.error.json" not in await keys(s3, bucket)


async def test_tag_mode_tags_and_skips_archived_pairs(
    ingestor: Ingestor, bucket: str, s3: S3, moto_endpoint: str,
) -> None:
    await put(s3, bucket, "rec.wav", media.wav(1.0), tags="source=pbx-2")
    await put(s3, bucket, "rec.json", meta("call-1"))
    url = f"s3://{bucket}/{PREFIX}"

    first = await run_s3_drop(ingestor, url, tenant=TENANT, endpoint_url=moto_endpoint,
                              once=True, after="tag")
    second = await run_s3_drop(ingestor, url, tenant=TENANT, endpoint_url=moto_endpoint,
                               once=True, after="tag")

    assert (first.archived, second.archived, second.already_archived) == (1, 0, 0)
    assert await tags(s3, bucket, f"{PREFIX}rec.wav") == {
        "source": "pbx-2", "archive-status": "archived"}
    assert await tags(s3, bucket, f"{PREFIX}rec.json") == {"archive-status": "archived"}
    assert len(await items(ingestor.archive)) == 1


async def test_two_importers_store_each_pair_once(
    archive: Archive, ingestor: Ingestor, bucket: str, s3: S3, moto_endpoint: str,
) -> None:
    audio = media.wav(0.5)
    for n in range(8):
        await put(s3, bucket, f"rec-{n}.wav", audio)
        await put(s3, bucket, f"rec-{n}.json", meta(f"call-{n}"))
    other = new_ingestor(archive)
    url = f"s3://{bucket}/{PREFIX}"
    reports = await asyncio.gather(*(
        run_s3_drop(i, url, tenant=TENANT, endpoint_url=moto_endpoint, once=True)
        for i in (ingestor, other)))

    assert sum(r.archived for r in reports) == 8
    assert sum(r.failed for r in reports) == 0
    assert sorted(i.external_id for i in await items(archive)) == [
        f"call-{n}" for n in range(8)]
    assert await keys(s3, bucket) == []


async def test_a_lone_metadata_object_of_an_archived_pair_is_finished(
    ingestor: Ingestor, bucket: str, s3: S3, moto_endpoint: str,
) -> None:
    """A run stopped between deleting the audio and the metadata leaves the metadata alone:
    once the grace has passed, it is recognised as archived, not failed."""
    url = f"s3://{bucket}/{PREFIX}"
    await put(s3, bucket, "rec.wav", media.wav(0.5))
    await put(s3, bucket, "rec.json", meta("call-1"))
    await run_s3_drop(ingestor, url, tenant=TENANT, endpoint_url=moto_endpoint, once=True)
    await put(s3, bucket, "rec.json", meta("call-1"))

    report = await run_s3_drop(ingestor, url, tenant=TENANT, endpoint_url=moto_endpoint,
                               once=True, orphan_grace=0)

    assert (report.already_archived, report.failed) == (1, 0)
    assert await keys(s3, bucket) == []
