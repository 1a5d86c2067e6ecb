"""The production shape of docker-compose.yml, run on this machine: the real PostgreSQL server,
moto's S3 server standing in for MinIO (a bucket with Object Lock and versioning), a one-shot
``archive db upgrade``, two ``archive serve --no-worker`` processes on different ports sharing no
state but the index, the bucket and the key material, and one ``archive worker``. Pushes, reads,
holds and purges go through both API processes."""

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from storage.s3 import create_bucket
from tests.databases import PgTemplate, _admin, pg_url_for
from tests.ingest import media
from tests.servers import free_port, stop, wait_http
from tests.storage.helpers import SESSION, TEST_KEY, raw_s3_client

ARCHIVE = str(Path(sys.executable).with_name("archive"))
TENANT = "camden"
NUMBER = "+442079460123"


@dataclass
class Cluster:
    env: dict[str, str]
    bucket: str
    endpoint: str
    apis: list[str] = field(default_factory=list)
    procs: list["subprocess.Popen[bytes]"] = field(default_factory=list)

    def cli(self, *args: str) -> str:
        return subprocess.run([ARCHIVE, *args], env=self.env, check=True, capture_output=True,
                              text=True, timeout=120).stdout.strip()

    def start(self, *args: str, health: str | None = None) -> None:
        proc = subprocess.Popen([ARCHIVE, *args], env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        if health is not None:
            wait_http(health, proc=proc, timeout=30)


def call(base: str, token: str, method: str, path: str, body: bytes | None = None, *,
         content_type: str = "application/json") -> tuple[int, Any]:
    request = urllib.request.Request(base + path, data=body, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            data = answer.read()
            status = answer.status
    except urllib.error.HTTPError as exc:
        data, status = exc.read(), exc.code
    is_json = data[:1] in (b"{", b"[")
    return status, json.loads(data) if is_json else data


def put_call(base: str, token: str, external_id: str, started_at: str,
             audio: bytes) -> tuple[int, Any]:
    """PUT a recording from NUMBER, as a PBX's post-call script does."""
    query = urlencode({"started_at": started_at, "caller_number": NUMBER})
    return call(base, token, "PUT", f"/v1/recordings/{external_id}?{query}", audio,
                content_type="audio/wav")


def wait_until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the cluster did not get there in time")
        time.sleep(0.25)


@pytest.fixture
async def pg_database(pg_template: PgTemplate) -> AsyncIterator[str]:
    """A new, empty (unmigrated) PostgreSQL database: the compose file's `migrate` job makes
    its schema."""
    name = f"archive_cluster_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    yield pg_url_for(name)
    await PgTemplate.drop(name)


@pytest.fixture
def cluster(pg_database: str, moto_endpoint: str, tmp_path: Path) -> Iterator[Cluster]:
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    asyncio.run(create_bucket(bucket, endpoint_url=moto_endpoint, object_lock=True,
                              versioning=True, retries=1, session=SESSION,
                              access_key=TEST_KEY, secret_key=TEST_KEY))
    secrets = tmp_path / "secrets"  # the one volume of key material the services share
    secrets.mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARCHIVE_"))},
           "AWS_ACCESS_KEY_ID": TEST_KEY, "AWS_SECRET_ACCESS_KEY": TEST_KEY,
           "ARCHIVE_DATA_DIR": str(tmp_path / "var"),
           "ARCHIVE_DATABASE_URL": pg_database,
           "ARCHIVE_STORE_URL": f"s3://{bucket}/archive",
           "ARCHIVE_S3_ENDPOINT_URL": moto_endpoint,
           "ARCHIVE_KEYRING_PATH": str(secrets / "keyring.json"),
           "ARCHIVE_SIGNING_KEY_FILE": str(secrets / "signing-key.pem"),
           "ARCHIVE_AUTO_MIGRATE": "false",
           "ARCHIVE_PURGE_INTERVAL": "1"}
    cluster = Cluster(env, bucket, moto_endpoint)
    try:
        cluster.cli("db", "upgrade")  # the `migrate` service, once
        for _ in range(2):  # `api`, two replicas
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            cluster.start("serve", "--no-worker", "--port", str(port), health=base + "/readyz")
            cluster.apis.append(base)
        cluster.start("worker")  # `worker`
        yield cluster
    finally:
        for proc in cluster.procs:
            stop(proc)


async def _object_keys(cluster: Cluster) -> list[str]:
    async with raw_s3_client(cluster.endpoint) as s3:
        listed = await s3.list_object_versions(Bucket=cluster.bucket)
    return [v["Key"] for v in listed.get("Versions", [])]


async def _legal_hold(cluster: Cluster, key: str) -> str:
    async with raw_s3_client(cluster.endpoint) as s3:
        answer = await s3.get_object_legal_hold(Bucket=cluster.bucket, Key=key)
    return str(answer["LegalHold"]["Status"])


def test_two_api_processes_and_a_worker_share_one_archive(cluster: Cluster) -> None:
    a, b = cluster.apis
    ingest = cluster.cli("tokens", "create", "--role", "ingest", "--tenant", TENANT)
    complaints = cluster.cli("tokens", "create", "--role", "complaints", "--tenant", TENANT)

    # A recording pushed to one API process is found and played through the other.
    audio = media.wav(3.0)
    status, item = put_call(a, ingest, "call-1", datetime.now(UTC).isoformat(), audio)
    assert status == 201, item
    status, found = call(b, complaints, "GET", "/v1/items?caller_number=020%207946%200123")
    assert status == 200 and [i["id"] for i in found["items"]] == [item["id"]]
    status, played = call(b, complaints, "GET", f"/v1/items/{item['id']}/media")
    assert status == 200 and played == audio  # kept as received, decrypted by the other process
    # The same upload retried through the other process is the same item.
    status, again = put_call(b, ingest, "call-1", item["started_at"], audio)
    assert status == 200 and again["id"] == item["id"]

    # A live hold placed through A holds an old call pushed later through B; the worker, which
    # destroys an old unheld chat pushed through A, leaves the held call alone.
    status, hold = call(a, complaints, "POST", "/v1/holds", json.dumps({
        "case_ref": "CMP-1", "reason": "Stage 2 complaint",
        "query": {"caller_number": NUMBER}}).encode())
    assert status == 201, hold
    old = (datetime.now(UTC) - timedelta(days=800)).isoformat()
    status, held_call = put_call(b, ingest, "call-old", old, media.wav(2.0))
    assert status == 201
    status, seen = call(a, complaints, "GET", f"/v1/items/{held_call['id']}")
    assert seen["holds"] == ["CMP-1"]  # held from the moment it became active
    status, chat = call(a, ingest, "POST", "/v1/transcripts", json.dumps({
        "external_id": "chat-old", "started_at": old,
        "customer": {"name": "Ann Example", "email": "ann@example.org"},
        "messages": [{"at": old, "from": "customer", "text": "My bin was missed"}]}).encode())
    assert status == 201

    def status_of(base: str, item_id: str) -> str:
        code, body = call(base, complaints, "GET", f"/v1/items/{item_id}")
        assert code == 200, body
        return str(body["status"])

    wait_until(lambda: status_of(b, chat["id"]) == "purged")
    assert status_of(a, held_call["id"]) == "active"
    keys = asyncio.run(_object_keys(cluster))
    held_keys = [k for k in keys if held_call["id"] in k]
    assert held_keys and all(asyncio.run(_legal_hold(cluster, k)) == "ON" for k in held_keys)
    assert not [k for k in keys if chat["id"] in k]  # the purged chat's objects are gone

    # Released through B, the old call is destroyed by the worker, its objects deleted.
    status, released = call(b, complaints, "POST", f"/v1/holds/{hold['id']}/release",
                            json.dumps({"reason": "Complaint closed"}).encode())
    assert status == 200, released
    wait_until(lambda: status_of(a, held_call["id"]) == "purged")
    wait_until(lambda: not [k for k in asyncio.run(_object_keys(cluster))
                            if held_call["id"] in k])
    assert status_of(b, item["id"]) == "active"  # a recent call stays
    for proc in cluster.procs:
        assert proc.poll() is None  # nothing crashed along the way
