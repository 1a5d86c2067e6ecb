"""The production selection: the app configured by settings for S3 (moto's server over HTTP)
and AWS KMS (moto's), on both index databases, stores and reads items end to end."""

import os
import uuid
from dataclasses import replace

import boto3
from pytest_aiohttp import AiohttpClient

from archive.clock import ManualClock
from archive.models import Channel
from archive.service import Actor
from archive.settings import Settings
from archive.tokens import ensure_tenant
from storage.base import iter_bytes, read_all
from storage.s3 import create_bucket
from tests.conftest import Client
from web.app import create_app
from web.keys import ARCHIVE


async def test_s3_and_kms_selected_by_settings(
    settings: Settings, moto_endpoint: str, clock: ManualClock, aiohttp_client: AiohttpClient,
) -> None:
    bucket = f"calls-{uuid.uuid4().hex[:8]}"
    await create_bucket(bucket, endpoint_url=moto_endpoint, object_lock=True)
    prod = replace(settings, store_url=f"s3://{bucket}/archive", s3_endpoint_url=moto_endpoint,
                   keyring="kms", kms_endpoint_url=moto_endpoint,
                   kms_alias_prefix=f"t{uuid.uuid4().hex[:6]}")
    client: Client = await aiohttp_client(create_app(prod, clock=clock))
    r = await client.get("/readyz")
    assert r.status == 200, await r.text()

    archive = client.app[ARCHIVE]
    async with archive.db.session() as session:
        await ensure_tenant(session, "camden", clock.now())
        await session.commit()
    data = os.urandom(300_000)
    item = await archive.put(tenant="camden", channel=Channel.CALL, external_id="c-1",
                             started_at=clock.now(), media_type="audio/wav",
                             chunks=iter_bytes(data), actor=Actor("t", "ingest"))
    assert item.kek_id is not None and item.kek_id.startswith("arn:aws:kms:")
    assert await read_all(archive.read(item)) == data
    assert await read_all(archive.read(item, 70_000, 70_010)) == data[70_000:70_010]
    info = await archive.store.stat(item.object_key or "")
    assert info is not None and info.size == item.stored_size
    assert archive.store.supports_legal_hold

    old_kek = item.kek_id
    new_kek, count = await archive.rotate_keys("camden")
    assert count == 1 and new_kek != old_kek
    rotated = await archive.get("camden", item.id)
    assert rotated.kek_id == new_kek
    assert await read_all(archive.read(rotated)) == data


async def test_readiness_reports_a_missing_bucket(
    settings: Settings, moto_endpoint: str, clock: ManualClock, aiohttp_client: AiohttpClient,
) -> None:
    bucket = f"gone-{uuid.uuid4().hex[:8]}"
    await create_bucket(bucket, endpoint_url=moto_endpoint)
    prod = replace(settings, store_url=f"s3://{bucket}", s3_endpoint_url=moto_endpoint)
    client: Client = await aiohttp_client(create_app(prod, clock=clock))
    assert (await client.get("/readyz")).status == 200
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-2")
    s3.delete_bucket(Bucket=bucket)
    r = await client.get("/readyz")
    body = await r.json()
    assert r.status == 503
    assert body["checks"]["store"].startswith("unavailable")
    assert body["checks"]["index"] == "ok"
