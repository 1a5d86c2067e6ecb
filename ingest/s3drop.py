"""The S3-drop importer: recordings that a system writes to a bucket, ``PREFIX/NAME.<ext>``
(the audio) beside ``PREFIX/NAME.json`` (the metadata the HTTP API takes; ``external_id``
defaults to ``NAME``). Only objects directly under the prefix are considered.

S3 makes an object visible only once it is whole, so a pair is taken as soon as both objects
exist. The audio is streamed from ``GetObject`` into the Ingestor, never read whole.

- archived: both objects are deleted (``after="delete"``), or tagged ``archive-status=archived``
  (``after="tag"``) and skipped by later passes. A stale ``NAME.error.json`` is deleted.
- failed (bad metadata, not audio...): both objects are tagged ``archive-status=failed`` and
  ``PREFIX/NAME.error.json`` is written with the reason; later passes skip the pair until it
  is uploaded again (a new upload has no tags). An object whose partner has not arrived after
  ``orphan_grace`` seconds fails the same way, except a lone ``NAME.json`` whose external id is
  already archived: that is what a run stopped between its two deletes leaves, and it is
  finished as archived.
- deferred (S3, the index or the store unavailable, or the same external id being uploaded
  elsewhere): left untouched for a later pass.

Several importers may watch one prefix: ingest is idempotent by external id, so a pair taken by
two of them gives one item; both then delete or tag it (each call is idempotent too). Tagging
keeps the object's other tags. Logs carry counts and item ids only.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlparse

import aiohttp
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from archive.errors import ArchiveError, BadRequestError, ConfigurationError, UnavailableError
from archive.models import Channel, ItemStatus, Role
from archive.service import Actor
from ingest.metadata import ContactMetadata
from ingest.service import Ingestor, IngestResult
from ingest.spool import (
    CHUNK,
    ERROR,
    MAX_METADATA,
    ORPHAN_GRACE,
    InProgressError,
    Outcome,
    SpoolReport,
    error_document,
    in_progress,
    is_transient,
    parse_metadata_json,
    require_tenant,
    split_name,
)
from storage.s3 import make_config

log = logging.getLogger(__name__)

TAG = "archive-status"
After = Literal["delete", "tag"]
S3_ACTOR = Actor("s3-drop-importer", Role.INGEST.value)
# Errors of S3 or of the connection to it: the pass is tried again later.
PROVIDER_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError)
Client = Any  # aiobotocore's clients are generated at run time and carry no types


class _GoneError(Exception):
    """An object of the pair disappeared: another importer finished it."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix/`` as ``(bucket, "prefix/")`` (the prefix empty or ending in /)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigurationError(f"expected s3://bucket/prefix/, not {url!r}")
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""


@dataclass
class _Group:
    """The objects of one stem under the prefix."""

    stem: str
    metadata: str | None = None
    audio: list[str] = field(default_factory=list)
    modified: dict[str, datetime] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    errored: bool = False  # NAME.error.json exists

    def keys(self) -> list[str]:
        return ([self.metadata] if self.metadata else []) + sorted(self.audio)


def _oldest_first(group: _Group) -> tuple[datetime, str]:
    return min(group.modified.values(), default=datetime.max.replace(tzinfo=UTC)), group.stem


def _not_found(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error.get("Code") in {"NoSuchKey", "NotFound", "404"} or status == 404


class _Drop:
    def __init__(self, ingestor: Ingestor, client: Client, bucket: str, prefix: str, *,
                 tenant: str, after: After, orphan_grace: float, actor: Actor) -> None:
        self.ingestor = ingestor
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.tenant = tenant
        self.after = after
        self.orphan_grace = orphan_grace
        self.actor = actor
        # Keys (with their ETag) known to be tagged archived or failed: no need to ask again.
        self.settled: dict[str, str] = {}

    def now(self) -> datetime:
        return self.ingestor.archive.clock.now()

    # -- listing ------------------------------------------------------------------------------

    async def list_groups(self) -> dict[str, _Group]:
        groups: dict[str, _Group] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix,
                                             Delimiter="/"):
            for obj in page.get("Contents", []):
                self._add(groups, obj)
        return groups

    def _add(self, groups: dict[str, _Group], obj: dict[str, Any]) -> None:
        key: str = obj["Key"]
        name = key[len(self.prefix):]
        if name.endswith(ERROR) and not name.startswith("."):
            groups.setdefault(name[:-len(ERROR)], _Group(name[:-len(ERROR)])).errored = True
            return
        parts = split_name(name)
        if parts is None:
            return
        group = groups.setdefault(parts[0], _Group(parts[0]))
        if parts[1] == "json":
            group.metadata = key
        else:
            group.audio.append(key)
        group.modified[key] = obj["LastModified"]
        group.etags[key] = obj.get("ETag", "")

    # -- tags ---------------------------------------------------------------------------------

    async def _tags(self, key: str) -> list[dict[str, str]]:
        try:
            reply = await self.client.get_object_tagging(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _not_found(exc):
                raise _GoneError from None
            raise
        tags: list[dict[str, str]] = reply.get("TagSet", [])
        return tags

    async def is_settled(self, group: _Group, key: str) -> bool:
        """Whether the object is tagged archived or failed (the pair's token is its first
        key: the metadata, or the audio of a lone audio object)."""
        etag = group.etags.get(key, "")
        if self.settled.get(key) == etag:
            return True
        tags = await self._tags(key)
        if any(t["Key"] == TAG for t in tags):
            self.settled[key] = etag
            return True
        return False

    async def tag(self, key: str, value: str) -> None:
        """Set ``archive-status`` on the object, keeping its other tags."""
        kept = [t for t in await self._tags(key) if t["Key"] != TAG]
        await self.client.put_object_tagging(
            Bucket=self.bucket, Key=key,
            Tagging={"TagSet": [*kept, {"Key": TAG, "Value": value}]})

    # -- a pass -------------------------------------------------------------------------------

    async def one_pass(self, report: SpoolReport, stop: asyncio.Event) -> None:
        groups = await self.list_groups()
        for group in sorted(groups.values(), key=_oldest_first):
            if stop.is_set():
                return
            try:
                report.count(await self.take(group))
            except _GoneError:
                continue
            except PROVIDER_ERRORS as exc:
                log.warning("s3 drop: deferred a recording (%s)", type(exc).__name__)
                report.count(Outcome.DEFERRED)

    async def take(self, group: _Group) -> Outcome | None:
        keys = group.keys()
        if not keys or await self.is_settled(group, keys[0]):
            return None
        if group.metadata and group.audio:
            return await self.process(group)
        oldest = min(group.modified.values())
        # S3's LastModified is the server's real time, so the age is taken on the wall clock.
        if (datetime.now(UTC) - oldest).total_seconds() < self.orphan_grace:
            return None
        return await self.lone(group)

    async def process(self, group: _Group) -> Outcome:
        assert group.metadata is not None
        if len(group.audio) > 1:
            return await self.fail(group, BadRequestError(
                "several audio objects share the name; keep one"))
        try:
            result = await self.ingest(group.stem, group.metadata, group.audio[0])
        except ArchiveError as exc:
            if not is_transient(exc):
                return await self.fail(group, exc)
            if not isinstance(exc, InProgressError):
                log.warning("s3 drop: deferred a recording (%s %s)", exc.status, exc.title)
            return Outcome.DEFERRED
        await self.finish(group, result)
        return Outcome.ARCHIVED if result.created else Outcome.ALREADY

    async def ingest(self, stem: str, metadata_key: str, audio_key: str) -> IngestResult:
        metadata = parse_metadata_json(await self.read_small(metadata_key), stem)
        if await in_progress(self.ingestor, self.tenant, metadata):
            raise InProgressError
        async with self.object_chunks(audio_key) as chunks:
            return await self.ingestor.recording(
                tenant=self.tenant, metadata=metadata, body=chunks, actor=self.actor)

    async def lone(self, group: _Group) -> Outcome | None:
        """An object whose partner never came: a leftover of an archived pair, or a failure."""
        if group.metadata:
            try:
                metadata = parse_metadata_json(await self.read_small(group.metadata),
                                               group.stem)
            except ArchiveError as exc:
                return await self.fail(group, exc)
            if await self._archived(metadata):
                await self.finish(group, None)
                return Outcome.ALREADY
        what = "audio object" if group.metadata else "NAME.json object"
        return await self.fail(group, BadRequestError(
            f"the recording has no {what} beside it after {self.orphan_grace:g} seconds"))

    async def _archived(self, metadata: ContactMetadata) -> bool:
        item = await self.ingestor.archive.find_external(
            self.tenant, Channel.CALL, metadata.external_id)
        return item is not None and item.status == ItemStatus.ACTIVE.value

    # -- outcomes -----------------------------------------------------------------------------

    async def finish(self, group: _Group, result: IngestResult | None) -> None:
        """The audio goes first, the metadata (the pair's token) last."""
        keys = sorted(group.audio) + ([group.metadata] if group.metadata else [])
        if self.after == "tag":
            for key in keys:
                await self.tag(key, "archived")
            self.settled.update({k: group.etags.get(k, "") for k in keys})
        else:
            for key in keys:
                await self.client.delete_object(Bucket=self.bucket, Key=key)
        if group.errored:
            await self.client.delete_object(Bucket=self.bucket,
                                            Key=f"{self.prefix}{group.stem}{ERROR}")
        if result is not None:
            log.info("s3 drop: %s item %s",
                     "archived" if result.created else "already had", result.item.id)

    async def fail(self, group: _Group, exc: ArchiveError) -> Outcome:
        log.warning("s3 drop: a recording failed (%s %s); see its .error.json", exc.status,
                    exc.title)
        doc = error_document(exc, self.now())
        await self.client.put_object(
            Bucket=self.bucket, Key=f"{self.prefix}{group.stem}{ERROR}",
            Body=_json_bytes(doc), ContentType="application/json")
        keys = sorted(group.audio) + ([group.metadata] if group.metadata else [])
        for key in keys:
            await self.tag(key, "failed")
        self.settled.update({k: group.etags.get(k, "") for k in keys})
        return Outcome.FAILED

    # -- reading objects ----------------------------------------------------------------------

    async def _get(self, key: str) -> dict[str, Any]:
        try:
            reply: dict[str, Any] = await self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _not_found(exc):
                raise _GoneError from None
            raise
        return reply

    async def read_small(self, key: str) -> bytes:
        """A metadata object, read up to just past the limit (the parser reports the excess)."""
        reply = await self._get(key)
        async with reply["Body"] as body:
            data: bytes = await body.read(MAX_METADATA + 1)
        return data

    @contextlib.asynccontextmanager
    async def object_chunks(self, key: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """The object's bytes as they arrive; the response is closed on leaving."""
        reply = await self._get(key)
        async with reply["Body"] as body:

            async def chunks() -> AsyncGenerator[bytes, None]:
                async for chunk in body.iter_chunks(CHUNK):
                    yield chunk

            stream = chunks()
            try:
                yield stream
            finally:
                await stream.aclose()


def _json_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


async def _sleep_until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_s3_drop(
    ingestor: Ingestor,
    url: str,
    *,
    tenant: str,
    endpoint_url: str | None = None,
    region: str = "eu-west-2",
    once: bool,
    interval: float = 10.0,
    after: After = "delete",
    stop: asyncio.Event | None = None,
    orphan_grace: float = ORPHAN_GRACE,
    actor: Actor = S3_ACTOR,
) -> SpoolReport:
    """Import the recordings dropped under ``url`` (``s3://bucket/prefix/``) into ``tenant``:
    one pass if ``once``, else a pass every ``interval`` seconds until ``stop`` is set. S3 being
    unreachable fails a ``once`` run; a long-running one logs it and tries again."""
    if after not in ("delete", "tag"):
        raise ConfigurationError("after must be 'delete' or 'tag'")
    bucket, prefix = parse_s3_url(url)
    stop = stop or asyncio.Event()
    await require_tenant(ingestor, tenant)
    report = SpoolReport()
    args: dict[str, Any] = {"region_name": region, "config": make_config()}
    if endpoint_url:
        args["endpoint_url"] = endpoint_url
    async with get_session().create_client("s3", **args) as client:
        drop = _Drop(ingestor, client, bucket, prefix, tenant=tenant, after=after,
                     orphan_grace=orphan_grace, actor=actor)
        while True:
            before = report.settled()
            try:
                await drop.one_pass(report, stop)
            except PROVIDER_ERRORS as exc:
                if once:
                    raise UnavailableError(f"the drop bucket {bucket!r} cannot be read"
                                           ) from exc
                log.warning("s3 drop: the bucket cannot be read (%s)", type(exc).__name__)
            if report.settled() != before:
                log.info("s3 drop: %s", report)
            if once or stop.is_set():
                return report
            await _sleep_until(stop, interval)
            if stop.is_set():
                return report

