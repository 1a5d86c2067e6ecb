"""The ingest service: from a producer's upload to an active, encrypted item.

Calls stream through: the request body is counted against the size limit and hashed as it
arrives, then, by the tenant's media policy, stored as received (while ffmpeg decodes a copy to
prove it is audio and learn its facts), transcoded to Ogg/Opus, or both. Card-payment ranges
(``pci_redactions``) are silenced before anything is stored, so a redacted call keeps a lossless
FLAC rendition in place of the original bytes. Everything runs through pipes and the encrypted
store: no plaintext media touches local disk. Any failure leaves nothing behind (``Archive
.writer``).

Idempotency is by (tenant, channel, external_id): the same upload again (same bytes, same
normalised metadata) answers with the existing item; different content is a conflict; a retry
racing the first upload waits for it.

An ``IngestObserver`` is told what each upload came to and how long ffmpeg took (metrics: counts
and timings only, never content or metadata).
"""

import asyncio
import enum
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from archive.errors import (
    ConflictError,
    PayloadTooLargeError,
    UnavailableError,
    UnprocessableError,
    UnsupportedMediaError,
)
from archive.models import Channel, Item, ItemStatus
from archive.service import MEDIA, Actor, Archive, DuplicateItemError, ItemWriter
from archive.settings import Settings
from ingest import wav
from ingest.audio import AudioError, AudioFacts, NotAudioError, Rendition, Transcoder
from ingest.metadata import ContactMetadata
from ingest.streams import tee
from ingest.transcripts import Transcript
from storage.base import iter_bytes

ORIGINAL = "original"
RETRY_WAIT = 60.0  # seconds a retry waits for the first upload of the same id to finish
RETRY_POLL = 0.2
A = TypeVar("A")
B = TypeVar("B")


class MediaPolicy(enum.StrEnum):
    ORIGINAL = "original"
    OPUS = "opus"
    BOTH = "both"


@dataclass(frozen=True)
class IngestResult:
    item: Item
    created: bool  # False: the same upload arrived before, this is its item


Outcome = Literal["created", "retry", "rejected"]


class IngestObserver(Protocol):
    """Told what each upload came to, for metrics (``web.metrics``): counts and timings only."""

    def ingested(self, channel: Channel, outcome: Outcome, size: int, seconds: float) -> None:
        """An upload ended: ``created`` a new item of ``size`` bytes received in ``seconds``;
        was a ``retry`` of a stored one; or was ``rejected`` (too large, not audio,
        undecodable, conflicting, the store failed, or cut off: the client went away or
        shutdown cancelled it). ``size`` is 0 unless created."""

    def transcoded(self, seconds: float) -> None:
        """One ffmpeg transcode (with the storing of its output) took ``seconds``."""


class _Unobserved:
    def ingested(self, channel: Channel, outcome: Outcome, size: int, seconds: float) -> None:
        pass

    def transcoded(self, seconds: float) -> None:
        pass


class _Source:
    """The upload as it arrives: counted against the limit and hashed.

    When the bytes are stored unchanged, the store's own hash of them is the source hash, and
    hashing them twice would be the largest CPU cost of the request: ``same_as_stored`` says so.
    """

    def __init__(self, body: AsyncIterator[bytes], limit: int) -> None:
        self._body = body
        self._limit = limit
        self._hash: hashlib._Hash | None = hashlib.sha256()
        self._stored_hash: str | None = None
        self.size = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._body:
            self.size += len(chunk)
            if self.size > self._limit:
                raise PayloadTooLargeError(
                    f"the upload is larger than the limit of {self._limit} bytes")
            if self._hash is not None:
                self._hash.update(chunk)
            yield chunk

    def unhashed(self) -> AsyncIterator[bytes]:
        """The chunks, for a caller that stores them unchanged and then calls
        ``same_as_stored``."""
        self._hash = None
        return self.chunks()

    def same_as_stored(self, item: Item) -> None:
        assert item.sha256 is not None
        self._stored_hash = item.sha256

    async def drain(self) -> None:
        async for _ in self.chunks():
            pass

    @property
    def sha256(self) -> str:
        if self._hash is None:
            assert self._stored_hash is not None, "unhashed source never stored"
            return self._stored_hash
        return self._hash.hexdigest()


def _audio_error(exc: AudioError) -> Exception:
    if isinstance(exc, NotAudioError):
        return UnsupportedMediaError(f"the upload is not audio: {exc}")
    return UnprocessableError(f"the audio cannot be decoded: {exc}")


def _media_facts(facts: AudioFacts, *, stored_as: str,
                 pci: tuple[tuple[float, float], ...]) -> dict[str, Any]:
    return {
        "format": facts.format, "codec": facts.codec, "sample_rate": facts.sample_rate,
        "channels": facts.channels, "duration": round(facts.duration, 3),
        "bit_rate": facts.bit_rate, "received_type": facts.media_type(),
        "stored_as": stored_as, "pci_silenced": [list(r) for r in pci],
    }


class Ingestor:
    """Stores recordings and transcripts pushed by producers."""

    def __init__(self, archive: Archive, transcoder: Transcoder, max_upload_bytes: int,
                 observer: IngestObserver | None = None) -> None:
        self.archive = archive
        self.transcoder = transcoder
        self.max_upload_bytes = max_upload_bytes
        self.observer: IngestObserver = observer or _Unobserved()

    async def _observed(self, channel: Channel, source: _Source,
                        work: Awaitable[IngestResult]) -> IngestResult:
        started = time.perf_counter()
        try:
            result = await work
        except BaseException:  # cut off (client gone, shutdown) counts as rejected too
            self.observer.ingested(channel, "rejected", 0, time.perf_counter() - started)
            raise
        self.observer.ingested(channel, "created" if result.created else "retry",
                               source.size if result.created else 0,
                               time.perf_counter() - started)
        return result

    @classmethod
    def from_settings(cls, archive: Archive, settings: Settings) -> "Ingestor":
        transcoder = Transcoder(settings.ffmpeg or None, settings.transcode_concurrency or None)
        return cls(archive, transcoder, settings.max_upload_bytes)

    # -- recordings ----------------------------------------------------------------------------

    async def recording(
        self, *, tenant: str, metadata: ContactMetadata, body: AsyncIterator[bytes],
        actor: Actor,
    ) -> IngestResult:
        source = _Source(body, self.max_upload_bytes)
        return await self._observed(Channel.CALL, source,
                                    self._recording(tenant, metadata, source, actor))

    async def _recording(self, tenant: str, metadata: ContactMetadata, source: _Source,
                         actor: Actor) -> IngestResult:
        try:
            async with self.archive.writer(
                tenant=tenant, channel=Channel.CALL, external_id=metadata.external_id,
                started_at=metadata.started_at, actor=actor, fields=metadata.fields,
            ) as w:
                policy = MediaPolicy(w.tenant.media_policy)
                # One permit for all of an upload's ffmpeg jobs: two jobs fed by one tee, each
                # waiting for a permit of its own, could deadlock with another upload.
                async with self.transcoder.permit():
                    facts, stored_as = await self._store_audio(w, policy, metadata, source)
                duration = facts.duration
                w.set(media=_media_facts(facts, stored_as=stored_as,
                                         pci=metadata.pci_redactions),
                      duration=round(duration, 3), source_sha256=source.sha256,
                      source_size=source.size,
                      content_hash=metadata.content_hash(source.sha256))
        except DuplicateItemError as dup:  # a concurrent upload of the same id won the insert
            return await self._retry(dup.existing, metadata, source)
        except AudioError as exc:
            raise _audio_error(exc) from None
        return IngestResult(w.item, created=True)

    async def _store_audio(
        self, w: ItemWriter, policy: MediaPolicy, metadata: ContactMetadata, source: _Source,
    ) -> tuple[AudioFacts, str]:
        """Store the audio as the policy says; return the input's facts and what was kept."""
        pci = metadata.pci_redactions
        if policy == MediaPolicy.ORIGINAL and not pci:
            head, rest = await wav.peek(source.unhashed())
            header = wav.parse_header(head)
            if header is not None:  # PCM/G.711 WAV: checked in-process, no decoding needed
                watch = wav.WavWatch(header)
                await w.store(MEDIA, "audio/wav", watch.watch(head, rest))
                source.same_as_stored(w.item)
                return watch.facts(), "original"
            to_store, to_probe = tee(_prepend(head, rest), 2)
            _, facts = await _together(
                w.store(MEDIA, "application/octet-stream", to_store),
                self.transcoder.probe(to_probe))
            source.same_as_stored(w.item)
            w.describe(MEDIA, facts.media_type())
            return facts, "original"
        head, rest = await wav.peek(source.chunks())
        header = wav.parse_header(head)
        channels = header.channels if header is not None else None  # spares Opus an ffmpeg
        chunks = _prepend(head, rest)
        if policy == MediaPolicy.BOTH:
            first, second = tee(chunks, 2)
            if pci:
                facts, _ = await _together(
                    self._transcode_into(w, ORIGINAL, first, Rendition.FLAC, pci=pci,
                                         channels=channels),
                    self._transcode_into(w, MEDIA, second, Rendition.OPUS, pci=pci,
                                         channels=channels))
                return facts, "opus+flac"
            _, facts = await _together(
                w.store(ORIGINAL, "application/octet-stream", first),
                self._transcode_into(w, MEDIA, second, Rendition.OPUS, pci=pci,
                                     channels=channels))
            w.describe(ORIGINAL, facts.media_type())
            return facts, "opus+original"
        # OPUS, or ORIGINAL with card-payment audio to silence: a lossless FLAC then.
        rendition = Rendition.OPUS if policy == MediaPolicy.OPUS else Rendition.FLAC
        facts = await self._transcode_into(w, MEDIA, chunks, rendition, pci=pci,
                                           channels=channels)
        return facts, rendition.value

    async def _transcode_into(
        self, w: ItemWriter, kind: str, chunks: AsyncIterator[bytes], rendition: Rendition,
        *, pci: tuple[tuple[float, float], ...], channels: int | None,
    ) -> AudioFacts:
        started = time.perf_counter()
        async with self.transcoder.transcode(chunks, output=rendition, silence=pci,
                                             channels=channels) as job:
            await w.store(kind, rendition.media_type, job.output)
            facts = await job.facts()
        self.observer.transcoded(time.perf_counter() - started)
        return facts

    # -- transcripts ---------------------------------------------------------------------------

    async def transcript(
        self, *, tenant: str, metadata: ContactMetadata, transcript: Transcript, actor: Actor,
    ) -> IngestResult:
        data = transcript.to_json_bytes()
        source = _Source(iter_bytes(data), self.max_upload_bytes)
        return await self._observed(Channel.CHAT, source,
                                    self._transcript(tenant, metadata, transcript, source, actor))

    async def _transcript(self, tenant: str, metadata: ContactMetadata, transcript: Transcript,
                          source: _Source, actor: Actor) -> IngestResult:
        extra = {"messages": len(transcript.messages),
                 "redactions": {"cards": transcript.redactions.cards,
                                "security_codes": transcript.redactions.security_codes}}
        fields = {**metadata.fields, "extra": extra}
        try:
            async with self.archive.writer(
                tenant=tenant, channel=Channel.CHAT, external_id=metadata.external_id,
                started_at=metadata.started_at, actor=actor, fields=fields,
            ) as w:
                await w.store(MEDIA, "application/json", source.chunks())
                w.set(source_sha256=source.sha256, source_size=source.size,
                      content_hash=metadata.content_hash(source.sha256))
        except DuplicateItemError as dup:
            return await self._retry(dup.existing, metadata, source)
        return IngestResult(w.item, created=True)

    # -- retries -------------------------------------------------------------------------------

    async def _retry(
        self, existing: Item, metadata: ContactMetadata, source: _Source
    ) -> IngestResult:
        """The external id is taken: the same content is a retry (200), else a conflict."""
        await source.drain()
        wanted = metadata.content_hash(source.sha256)
        item: Item | None = existing
        deadline = asyncio.get_running_loop().time() + RETRY_WAIT
        while item is not None and item.status == ItemStatus.PENDING.value:
            if asyncio.get_running_loop().time() > deadline:
                raise UnavailableError(
                    f"an upload of {metadata.external_id!r} is still in progress; retry later")
            await asyncio.sleep(RETRY_POLL)
            item = await self.archive.find_external(
                existing.tenant, Channel(existing.channel), existing.external_id)
        if item is None:
            raise UnavailableError(
                f"a concurrent upload of {metadata.external_id!r} failed; retry it")
        if item.status != ItemStatus.ACTIVE.value:
            raise ConflictError(
                f"external_id {metadata.external_id!r} belongs to an item that was destroyed")
        if item.content_hash != wanted:
            raise ConflictError(
                f"external_id {metadata.external_id!r} already holds different content")
        return IngestResult(item, created=False)


async def _prepend(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if head:
        yield head
    async for chunk in rest:
        yield chunk


async def _together(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Run two branches of one pipeline at once. If either fails, the other is cancelled and
    the first failure is raised as itself (a TaskGroup would wrap it in an ExceptionGroup, and
    callers map ``AudioError`` and the like to answers)."""
    a, b = asyncio.ensure_future(first), asyncio.ensure_future(second)
    try:
        await asyncio.wait([a, b], return_when=asyncio.FIRST_EXCEPTION)
        for task in sorted((a, b), key=lambda t: not t.done()):
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return a.result(), b.result()
    finally:
        for task in (a, b):
            task.cancel()
        await asyncio.gather(a, b, return_exceptions=True)
