"""Waveform images of calls: ffmpeg's ``showwavespic`` over the decrypted audio, cached
encrypted as an object of the item.

Drawing: the item's media is decrypted and streamed into ffmpeg's stdin (no plaintext touches
local disk) and one PNG comes out of its stdout: 1200x200 for a mono call, 1200x240 for a
stereo one, whose two channels (usually the two parties) are drawn apart, channel 1 (left)
above in GOV.UK blue and channel 2 (right) below in GOV.UK orange, on white. Calls of more
channels are drawn as one, every channel on top of the others. Amplitudes are drawn on a
square-root scale, so that quiet telephone speech is still visible. ffmpeg runs under a permit
of the transcode semaphore that ingest uses, so pictures never crowd out uploads.

Caching: the first picture of an item is stored as its ``waveform`` object, encrypted under
the item's data key like its media (``Archive.add_object``), and recorded in ``Item.objects``:
destruction, erasure, anonymisation and purge delete it through the outbox with the media;
the sweeper and the scrub see it as the item's own; key rotation re-wraps the one data key.
Two first requests at once each draw and store at a key of their own; the first to commit is
kept and the other's object is deleted, so nothing is overwritten. A cached picture that fails
its integrity check is drawn again and replaces it.

Only active calls have a waveform: chats, destroyed items and anonymised calls (whose audio
was destroyed) answer ``NotFoundError``.
"""

import asyncio
import contextlib
import hashlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import ffmpeg

from archive.errors import ArchiveError, IntegrityFailureError, NotFoundError
from archive.models import Channel, Item, ItemStatus
from archive.service import Actor, Archive, object_key_of
from storage.base import iter_bytes, read_all

log = logging.getLogger(__name__)

KIND = "waveform"  # the object's kind in Item.objects
MEDIA_TYPE = "image/png"
ACTION = "item.waveform"  # the audit event of storing an item's picture (once per item)
WIDTH = 1200
MONO_HEIGHT = 200
STEREO_HEIGHT = 240
COLOURS = ("#1d70b8", "#f47738")  # GOV.UK blue (channel 1, left), orange (channel 2, right)
BACKGROUND = "white"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE = 4 * 1024 * 1024  # a picture is some kilobytes; more is a fault, not an image
TIMEOUT = 300.0  # seconds one drawing may take (hours of audio take a few)
_CHUNK = 64 * 1024
_STDERR_KEPT = 2048

#: ffmpeg processes started, by what for ("ffmpeg_runs"): for tests and diagnostics.
stats: Counter[str] = Counter()


class WaveformError(ArchiveError):
    """The recording's waveform could not be drawn."""

    status = 500
    title = "Waveform failed"


@dataclass(frozen=True)
class Ffmpeg:
    """How to run ffmpeg (the web app passes ingest's): the binary, a permit of the transcode
    semaphore, and the demuxers it may use on stored audio."""

    path: str
    permit: Callable[[], AbstractAsyncContextManager[None]]
    input_formats: Sequence[str]


@dataclass(frozen=True)
class Waveform:
    """A picture as served: its PNG bytes and their SHA-256 (the ETag)."""

    data: bytes
    sha256: str
    cached: bool  # read from the item's stored object (no ffmpeg ran)


def channels_of(item: Item) -> int:
    """The recording's channel count as ingest found it (1 when unknown)."""
    value = (item.media or {}).get("channels")
    return value if isinstance(value, int) and value > 0 else 1


def is_stereo(item: Item) -> bool:
    return channels_of(item) == 2


def size_of(channels: int) -> tuple[int, int]:
    """Width and height of the picture of a recording of ``channels`` channels."""
    return WIDTH, STEREO_HEIGHT if channels == 2 else MONO_HEIGHT


def check_drawable(item: Item) -> None:
    """``NotFoundError`` unless the item is an active call with its audio."""
    if item.channel != Channel.CALL.value:
        raise NotFoundError(f"item {item.id} is a {item.channel}: only calls have a waveform")
    if (item.status != ItemStatus.ACTIVE.value or item.wrapped_key is None
            or item.plain_size is None):
        raise NotFoundError(f"item {item.id} has no audio ({item.status}): no waveform")


def ffmpeg_args(channels: int, input_formats: Sequence[str]) -> list[str]:
    """ffmpeg's arguments: the audio on stdin, one PNG on stdout."""
    width, height = size_of(channels)
    stereo = channels == 2
    audio = ffmpeg.input("pipe:0", format_whitelist=",".join(input_formats),
                         protocol_whitelist="pipe")["a:0"]
    picture = audio.filter(
        "showwavespic", s=f"{width}x{height}", split_channels=int(stereo),
        colors="|".join(COLOURS) if stereo else COLOURS[0], scale="sqrt", draw="full",
        filter="peak")
    background = ffmpeg.input(f"color=c={BACKGROUND}:s={width}x{height}:d=1", f="lavfi")
    node = (ffmpeg.overlay(background, picture, format="auto").filter("format", "rgb24")
            .output("pipe:1", f="image2pipe", **{"c:v": "png", "frames:v": 1,
                                                  "fflags": "+bitexact",
                                                  "flags:v": "+bitexact"}))
    args: list[str] = node.get_args()
    return ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", *args]


async def draw(tool: Ffmpeg, audio: AsyncIterator[bytes], channels: int) -> bytes:
    """The PNG of ``audio`` (a recording of ``channels`` channels), drawn by one ffmpeg.

    ``audio`` is piped into ffmpeg as it comes; if it fails (a damaged object), ffmpeg is
    killed before it can draw the part it got, and that error is raised. Whatever happens
    (errors, cancellation, the timeout), the process is killed if still running and reaped.
    """
    args = ffmpeg_args(channels, tool.input_formats)
    async with tool.permit():
        stats["ffmpeg_runs"] += 1
        proc = await asyncio.create_subprocess_exec(
            tool.path, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        feeder = asyncio.ensure_future(_feed(proc, audio))
        errors = asyncio.ensure_future(_tail(proc))
        try:
            async with asyncio.timeout(TIMEOUT):
                image = await _image(proc)
                await proc.wait()
                await feeder  # the source's own error, if it failed
        except TimeoutError:
            raise WaveformError("drawing the waveform took too long") from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            await proc.wait()
            stderr = await errors
    if proc.returncode != 0 or image is None or not image.startswith(PNG_SIGNATURE):
        # The first line only, cut short: ffmpeg's errors name the input as pipe:0.
        first = stderr.decode("utf-8", "replace").strip().splitlines()[:1]
        log.error("waveform: ffmpeg failed (exit status %s): %s", proc.returncode,
                  first[0][:200] if first else "no message")
        raise WaveformError
    return image


async def _feed(proc: asyncio.subprocess.Process, audio: AsyncIterator[bytes]) -> None:
    """Copy ``audio`` into ffmpeg's stdin, then close it. A failing source kills ffmpeg first:
    closing its stdin would make it draw the part it got as if it were all."""
    assert proc.stdin is not None
    try:
        async for chunk in audio:
            proc.stdin.write(chunk)
            await proc.stdin.drain()
    except ConnectionError:
        return  # ffmpeg stopped reading; its exit status says why
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    finally:
        proc.stdin.close()
        aclose = getattr(audio, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def _image(proc: asyncio.subprocess.Process) -> bytes | None:
    """ffmpeg's stdout, or ``None`` if it grew past :data:`MAX_IMAGE` (ffmpeg is killed)."""
    assert proc.stdout is not None
    parts: list[bytes] = []
    size = 0
    while chunk := await proc.stdout.read(_CHUNK):
        size += len(chunk)
        if size > MAX_IMAGE:
            proc.kill()
            while await proc.stdout.read(_CHUNK):
                pass
            return None
        parts.append(chunk)
    return b"".join(parts)


async def _tail(proc: asyncio.subprocess.Process) -> bytes:
    """The start of ffmpeg's stderr (its first errors), reading the rest to its end."""
    assert proc.stderr is not None
    kept = b""
    while chunk := await proc.stderr.read(_CHUNK):
        kept = (kept + chunk)[:_STDERR_KEPT]
    return kept


async def waveform(archive: Archive, item: Item, tool: Ffmpeg, actor: Actor) -> Waveform:
    """The item's waveform: its cached picture, or one drawn now and cached.

    ``NotFoundError`` unless ``item`` is an active call (see :func:`check_drawable`), or if it
    was destroyed while the picture was being drawn.
    """
    check_drawable(item)
    facts = (item.objects or {}).get(KIND)
    replaces = None
    if facts is not None:
        try:
            data = await read_all(archive.read(item, kind=KIND))
        except IntegrityFailureError:
            # Damaged or missing (the scrub reports it too): draw it again in its place.
            log.warning("waveform of item %s failed its integrity check; drawing it again",
                        item.id)
            replaces = object_key_of(item, KIND)
        else:
            digest = hashlib.sha256(data).hexdigest()
            if digest == facts.get("sha256"):
                return Waveform(data, digest, cached=True)
            log.warning("waveform of item %s does not match its hash; drawing it again",
                        item.id)
            replaces = object_key_of(item, KIND)
    data = await draw(tool, archive.read(item), channels_of(item))
    # Racing another first request is harmless: each stores its own object and one is kept.
    # Either way this request answers the picture it drew (the same audio, the same picture).
    await archive.add_object(item, KIND, MEDIA_TYPE, iter_bytes(data), actor=actor,
                             action=ACTION, replaces=replaces)
    return Waveform(data, hashlib.sha256(data).hexdigest(), cached=False)
