"""Audio probing and transcoding with ffmpeg, streamed through pipes.

An upload goes into ffmpeg's stdin and the rendition comes out of its stdout: no plaintext media
is ever written to local disk, on any path (errors included), and memory stays bounded: a chunk
in flight on each side, a short tail of ffmpeg's log, a few hundred bytes of container headers.

Processes
    :meth:`Transcoder.probe` runs one ffmpeg that decodes the whole upload to ``-f null``.
    ``Rendition.FLAC`` runs one ffmpeg (decode, silence, encode). ``Rendition.OPUS`` needs the
    channel count first, because its bit rate is set per channel (16 kb/s each, so the two
    parties of a stereo call keep their own channel) and ffmpeg fixes it before it has read the
    input. When the caller knows it (from a WAV header read in-process) one ffmpeg does all;
    otherwise two run, joined by an OS pipe: a decoder that writes raw float PCM in NUT, and an
    encoder started once the decoder has said how many channels the input has. A job holds one
    permit of the transcoder's semaphore until all its processes have exited, whatever the
    number of processes; jobs that read one upload through :func:`ingest.streams.tee` must
    share one with :meth:`Transcoder.permit`.

Facts
    Format, codec, sample rate and channels come from ffmpeg's own description of the input
    (``Input #0, wav, from 'pipe:0'`` and its ``Stream #0:N: Audio: ...`` lines). The duration is
    what was actually decoded: the first audio stream's timestamps are rebuilt from the sample
    count (``asetpts=N/SR/TB``) and ffmpeg's ``-progress`` reports the end time of its output. The
    bit rate is the upload's size in bits divided by that duration.

What is refused (see the exception classes)
    - :class:`EmptyAudioError` (a kind of :class:`UndecodableAudioError`): no bytes at all.
    - :class:`NotAudioError`: ffmpeg recognises no audio container (text, random bytes, images,
      formats outside ``INPUT_FORMATS``), or the input has no audio stream, or it has a video
      stream that is not attached cover art. A video is refused as soon as ffmpeg has described
      the input, without decoding the rest.
    - :class:`UndecodableAudioError`: the input looks like audio but cannot be decoded: ffmpeg
      reported an error while demuxing or decoding (a damaged frame, a partial last sample, a
      bad CRC), nothing was decoded, or the file is truncated (below). Also an input whose magic
      bytes say WAV, Ogg, FLAC, MP3 (ID3), MP4, Matroska... but that ffmpeg cannot open, for
      example an MP4 whose index (``moov``) comes after the media: it cannot be read from a pipe.

Truncation: "truncated" means the container announces more than arrived. Checked while the bytes
stream past (nothing is buffered):

    - WAV (RIFF, RF64/BW64): the ``data`` chunk declares more bytes than arrived, or the stream
      ends inside the header. A declared size of 0 or >= 0x7FFF0000 is a streaming writer's
      placeholder ("unknown length") and is not checked.
    - MP3: the stream ends inside a frame (frames are walked from the start, after any ID3v2
      tag), or inside the ID3v2 tag, or the Xing/Info header counts more frames than arrived. A
      walk that meets something other than a frame (an ID3v1 or APE tag, junk) stops judging.
    - Ogg: the stream ends inside a page, or a logical stream has no end-of-stream page.
    - FLAC, Matroska/WebM, MP4/M4A: the duration in the header exceeds what was decoded by more
      than 0.25 s + 1 %; and ffmpeg itself reports a partial Matroska or MP4 file.
    - Raw GSM has no header: a partial 33-byte frame is refused (ffmpeg's demuxer reports it,
      so the message says "corrupt"), a cut on a frame boundary is a shorter recording.

    A truncated file is refused with :class:`UndecodableAudioError` ("the audio is truncated:
    ...") rather than archived shorter than the call was. Not detectable, so accepted: raw GSM
    (or a WAV with a placeholder size) cut on a frame (sample) boundary, and an MP3 without a
    Xing/Info header cut between frames.

Card payments (PCI DSS): ``silence`` ranges, in seconds from the first decoded sample, are made
digitally silent with ffmpeg's ``volume`` filter before encoding, so the stored rendition never
holds that audio. The filter's timeline (``enable=``) and its ``t`` are per frame, not per
sample, and decoders make frames of up to hundreds of milliseconds (``enable=`` alone would let
up to a frame of card audio through), so the audio is first cut into frames of 160 samples
(20 ms at 8 kHz) and every frame that overlaps a range is silenced: the silence covers each range
completely and may start and end up to one frame early or late. ``precision=fixed`` keeps integer
samples integer (16-bit stays 16-bit in the FLAC, which is exactly zero in the ranges). For Opus
the ranges are widened by 0.1 s each side, because a lossy codec smears: its decoder rings on for
~35 ms after the audio stops. What an Opus decoder then gives for the range is its noise floor
for digital silence (measured: -99 dB RMS / -92 dB peak mono, -96 / -86 dB coupled stereo).

Errors and cleanup: if ``source`` raises (the client went away), that same exception reaches the
caller, not an :class:`AudioError`. On any exit from :meth:`Transcoder.transcode`'s context
(success, error, cancellation, a consumer that stopped reading early) the processes are killed
if still running and reaped, their pipes drained and closed, and the task feeding stdin
cancelled and awaited; :meth:`Transcoder.probe` does the same. A job's ``output`` raises the
job's error instead of ending, so a consumer storing it can never mistake a failed transcode
for a complete one.

ffmpeg only reads demuxers in ``INPUT_FORMATS`` and only the ``pipe`` protocol: a playlist or
concat file in an upload cannot make it open other files or URLs.
"""

import asyncio
import contextlib
import contextvars
import enum
import functools
import math
import os
import re
import shutil
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import ffmpeg
import imageio_ffmpeg  # type: ignore[import-untyped]

__all__ = [
    "INPUT_FORMATS",
    "AudioError",
    "AudioFacts",
    "EmptyAudioError",
    "NotAudioError",
    "Rendition",
    "TranscodeJob",
    "Transcoder",
    "UndecodableAudioError",
    "find_ffmpeg",
]

#: The demuxers ffmpeg may use on an upload (its ``-format_whitelist``).
INPUT_FORMATS = (
    "wav", "w64", "mp3", "ogg", "gsm", "flac", "matroska", "mov", "aac", "amr", "aiff", "au",
    "caf", "asf", "wv", "voc",
)
OPUS_BITS_PER_CHANNEL = 16_000
CHUNK_SIZE = 64 * 1024
_SILENCE_FRAME = 160  # samples per frame while silencing: 20 ms at 8 kHz
_OPUS_GUARD = 0.1  # seconds silenced either side of a range in the Opus rendition
_FLAC_FRAME = 4096  # samples per FLAC frame (silencing cuts small frames; FLAC keeps each)
_MAX_SILENCE_RANGES = 1000
_STDERR_LINE_MAX = 4096
_KEPT_ERRORS = 5
_TAIL_LINES = 20
_DURATION_SLACK = 0.25  # seconds (+1 %) a header's duration may exceed what was decoded


@functools.cache
def find_ffmpeg() -> str:
    """The ffmpeg to run: ``ffmpeg`` on ``PATH`` if there is one, else imageio-ffmpeg's static
    build (so ``pip install`` alone gives a working service). Cached: ``find_ffmpeg.cache_clear()``
    to look again."""
    return shutil.which("ffmpeg") or str(imageio_ffmpeg.get_ffmpeg_exe())


# -- what comes out ------------------------------------------------------------------------------


class Rendition(enum.StrEnum):
    """What the archive stores of a recording."""

    #: Ogg/Opus tuned for speech, 16 kb/s per channel (stereo stays stereo: the two parties).
    OPUS = "opus"
    #: Lossless FLAC: the original with card-payment ranges silenced (whose bytes cannot be kept).
    FLAC = "flac"

    @property
    def media_type(self) -> str:
        return _RENDITION_TYPES[self][0]

    @property
    def extension(self) -> str:
        """The file extension (without the dot) for a download."""
        return _RENDITION_TYPES[self][1]

    def output_options(self, channels: int = 1) -> dict[str, str]:
        """ffmpeg output options (name without the dash -> value) for ``channels`` channels."""
        common = {"map_metadata": "-1", "fflags": "+bitexact", "flags:a": "+bitexact"}
        if self is Rendition.FLAC:
            return {"c:a": "flac", **common, "f": "flac"}
        options = {
            "c:a": "libopus",
            "b:a": str(OPUS_BITS_PER_CHANNEL * max(1, channels)),
            "application": "voip",
            "vbr": "on",
            "frame_duration": "20",
        }
        if channels > 2:
            # Discrete channels: any layout, each party coded on its own.
            options["mapping_family"] = "255"
        return {**options, **common, "f": "ogg"}

    def output_args(self, channels: int = 1) -> list[str]:
        """:meth:`output_options` as command-line arguments, to put before an output file."""
        return [arg for name, value in self.output_options(channels).items()
                for arg in (f"-{name}", value)]


_RENDITION_TYPES = {
    Rendition.OPUS: ("audio/ogg; codecs=opus", "opus"),
    Rendition.FLAC: ("audio/flac", "flac"),
}

_MEDIA_TYPES = {
    "wav": "audio/wav", "w64": "audio/x-w64", "mp3": "audio/mpeg", "ogg": "audio/ogg",
    "gsm": "audio/gsm", "flac": "audio/flac", "matroska": "audio/x-matroska", "mov": "audio/mp4",
    "aac": "audio/aac", "amr": "audio/amr", "aiff": "audio/aiff", "au": "audio/basic",
    "caf": "audio/x-caf", "asf": "audio/x-ms-wma", "wv": "audio/x-wavpack", "voc": "audio/x-voc",
}


@dataclass(frozen=True, slots=True)
class AudioFacts:
    """What ffmpeg found in an upload."""

    format: str  # the container as ffmpeg names its demuxer: "wav", "mp3", "ogg", "gsm", ...
    codec: str  # the first audio stream's codec: "pcm_s16le", "mp3", "opus", "gsm", ...
    sample_rate: int
    channels: int
    duration: float  # seconds actually decoded, not what a header claims
    bit_rate: int | None  # the upload's bits per second of decoded audio

    def media_type(self) -> str:
        """The upload's media type, from its container."""
        names = self.format.split(",")
        if "matroska" in names and self.codec in {"opus", "vorbis"}:
            return "audio/webm"
        for name in names:
            if name in _MEDIA_TYPES:
                return _MEDIA_TYPES[name]
        return "application/octet-stream"


# -- errors --------------------------------------------------------------------------------------


class AudioError(Exception):
    """The audio could not be processed."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class NotAudioError(AudioError):
    """The upload is not audio."""


class UndecodableAudioError(AudioError):
    """The upload looks like audio but cannot be decoded."""


class EmptyAudioError(UndecodableAudioError):
    """The upload is empty."""


# -- silence ranges ------------------------------------------------------------------------------


def _check_silence(silence: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Validate ranges (finite, 0 <= start < end); return them sorted with overlaps merged."""
    ranges: list[tuple[float, float]] = []
    for item in silence:
        start, end = (float(x) for x in item)
        if not (math.isfinite(start) and math.isfinite(end)):
            raise ValueError(f"silence range {item!r} is not finite")
        if start < 0 or start >= end:
            raise ValueError(f"silence range {item!r} must have 0 <= start < end")
        ranges.append((start, end))
    if len(ranges) > _MAX_SILENCE_RANGES:
        raise ValueError(f"at most {_MAX_SILENCE_RANGES} silence ranges")
    merged: list[tuple[float, float]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _mute_expression(ranges: Sequence[tuple[float, float]]) -> str:
    """A ``volume`` expression that is 0 for every frame overlapping a range, else 1.

    ``t`` is the frame's start; every frame but the last holds ``_SILENCE_FRAME`` samples, so a
    frame overlaps [a, b] when ``t + _SILENCE_FRAME/sample_rate > a`` and ``t <= b``. Bounds are
    rounded outwards to the microsecond."""
    frame = f"{_SILENCE_FRAME}/sample_rate"
    terms = [
        f"gt(t+{frame},{math.floor(a * 1e6) / 1e6:.6f})*lte(t,{math.ceil(b * 1e6) / 1e6:.6f})"
        for a, b in ranges
    ]
    return f"if({'+'.join(terms)},0,1)"


# -- ffmpeg's log --------------------------------------------------------------------------------

_PREFIX = re.compile(
    r"^(?:\[[^\[\]]* @ 0x[0-9a-fA-F]+\] ?)*"
    r"(?:\[(?P<level>trace|debug|verbose|info|warning|error|fatal|panic)\] ?)?"
)
_INPUT = re.compile(r"^Input #0, (?P<format>.+?), from ")
_STREAM = re.compile(r"^\s+Stream #0:(?P<index>\d+)[^:]*: (?P<kind>\w+): (?P<desc>.*)$")
_DURATION = re.compile(r"^\s+Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_PROGRESS = re.compile(r"^(?P<key>out_time_us|progress)=(?P<value>\S*)$")
_AUDIO = re.compile(r"^(?P<codec>[\w-]+).*?, (?P<rate>\d+) Hz, (?P<layout>[^,]+)")
_ERROR_LEVELS = frozenset({"error", "fatal", "panic"})
_HEADER_END = ("Stream mapping:", "Output #", "Press [q]")

# ffmpeg's named channel layouts (libavutil/channel_layout.c); others print "N channels".
_LAYOUT_CHANNELS = {
    "mono": 1, "stereo": 2, "binaural": 2, "downmix": 2, "2.1": 3, "3.0": 3, "3.0(back)": 3,
    "4.0": 4, "quad": 4, "quad(side)": 4, "3.1": 4, "5.0": 5, "5.0(side)": 5, "4.1": 5, "5.1": 6,
    "5.1(side)": 6, "6.0": 6, "6.0(front)": 6, "3.1.2": 6, "hexagonal": 6, "6.1": 7,
    "6.1(back)": 7, "6.1(front)": 7, "7.0": 7, "7.0(front)": 7, "7.1": 8, "7.1(wide)": 8,
    "7.1(wide-side)": 8, "5.1.2": 8, "7.1(top)": 8, "octagonal": 8, "cube": 8, "5.1.4": 10,
    "7.1.2": 10, "7.1.4": 12, "7.2.3": 12, "9.1.4": 14, "9.1.6": 16, "hexadecagonal": 16,
    "22.2": 24,
}


def _channels(layout: str) -> int | None:
    layout = layout.strip()
    if layout in _LAYOUT_CHANNELS:
        return _LAYOUT_CHANNELS[layout]
    match = re.match(r"(\d+) channels", layout)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class _Stream:
    index: int
    kind: str  # "Audio", "Video", "Subtitle", "Data", "Attachment"
    desc: str

    @property
    def is_refused_video(self) -> bool:
        return self.kind == "Video" and "(attached pic)" not in self.desc


class _Log:
    """What one ffmpeg process says on stderr: the input's description, errors and progress.

    Keeps only what it needs: the input's stream lines, the first few error messages and a short
    tail of warnings, so a chatty or hostile input cannot grow memory."""

    def __init__(self, on_header: Callable[["_Log"], None] | None = None) -> None:
        self.format: str | None = None
        self.declared_duration: float | None = None
        self.streams: list[_Stream] = []
        self.out_time_us: int | None = None
        self.errors: list[str] = []
        self.tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self.open_failed = False
        self.no_stream = False
        self.header_done = asyncio.Event()
        self._on_header = on_header
        self._in_input = False

    def feed(self, raw: str) -> None:
        prefix = _PREFIX.match(raw)
        level = prefix.group("level") if prefix else None
        msg = raw[prefix.end():] if prefix else raw
        if level is None and (progress := _PROGRESS.match(msg)):
            if progress.group("key") == "out_time_us" and progress.group("value").isdigit():
                self.out_time_us = int(progress.group("value"))
            return
        if level not in (None, "info"):
            # Warnings and errors may come between the lines of the input's description.
            self._problem(level, msg.strip())
            return
        if (match := _INPUT.match(msg)) is not None:
            self.format = match.group("format")
            self._in_input = True
        elif self._in_input and msg[:1].isspace():
            if (match := _STREAM.match(msg)) is not None:
                self.streams.append(_Stream(int(match["index"]), match["kind"], match["desc"]))
            elif (match := _DURATION.match(msg)) is not None:
                hours, minutes, seconds = match.groups()
                self.declared_duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        else:
            self._in_input = False
            if msg.startswith(_HEADER_END):
                self.end_header()

    def _problem(self, level: str, text: str) -> None:
        self.tail.append(f"[{level}] {text}")
        if level in _ERROR_LEVELS:
            if len(self.errors) < _KEPT_ERRORS:
                self.errors.append(text)
            self.open_failed |= "Error opening input" in text
            self.no_stream |= "matches no streams" in text

    def end_header(self) -> None:
        """The input's description is complete (or will never come: ffmpeg has exited)."""
        if not self.header_done.is_set():
            self.header_done.set()
            if self._on_header is not None:
                self._on_header(self)

    @property
    def audio(self) -> _Stream | None:
        """The stream ffmpeg decodes: the first audio stream (``0:a:0``)."""
        return next((s for s in self.streams if s.kind == "Audio"), None)

    @property
    def video(self) -> bool:
        return any(s.is_refused_video for s in self.streams)

    @property
    def duration(self) -> float:
        return (self.out_time_us or 0) / 1e6

    def first_error(self) -> str:
        return self.errors[0] if self.errors else "no message"


async def _read_log(stream: asyncio.StreamReader, log: _Log) -> None:
    """Read ffmpeg's stderr to its end into ``log``; lines are cut at ``_STDERR_LINE_MAX``."""
    pending = b""
    try:
        while data := await stream.read(4096):
            *lines, pending = re.split(rb"[\r\n]", pending + data)
            pending = pending[:_STDERR_LINE_MAX]
            for line in lines:
                if line:
                    log.feed(line[:_STDERR_LINE_MAX].decode("utf-8", "replace"))
        if pending:
            log.feed(pending.decode("utf-8", "replace"))
    finally:
        log.end_header()


# -- container checks (truncation) ---------------------------------------------------------------

# A parser is a generator that yields n > 0 to read n bytes (it is sent them), n < 0 to skip -n
# bytes (it is sent b""), and returns when it has nothing more to judge.
_Parser = Generator[int, bytes, None]


class _Walk:
    """Drives a parser over chunks as they stream past, keeping at most one header in memory."""

    def __init__(self, parser: _Parser) -> None:
        self._parser = parser
        self._buf = bytearray()
        self._want = 0
        self.skip_left = 0
        self.done = False
        self._advance(None)

    def _advance(self, value: bytes | None) -> None:
        try:
            step = next(self._parser) if value is None else self._parser.send(value)
            while step == 0:
                step = self._parser.send(b"")
        except StopIteration:
            self.done = True
            return
        if step < 0:
            self.skip_left, self._want = -step, 0
        else:
            self.skip_left, self._want = 0, step

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        while pos < len(view) and not self.done:
            if self.skip_left:
                n = min(self.skip_left, len(view) - pos)
                self.skip_left -= n
                pos += n
                if not self.skip_left:
                    self._advance(b"")
            else:
                n = min(self._want - len(self._buf), len(view) - pos)
                self._buf += view[pos:pos + n]
                pos += n
                if len(self._buf) == self._want:
                    got = bytes(self._buf)
                    self._buf.clear()
                    self._advance(got)

    @property
    def partial(self) -> bool:
        """The stream stopped in the middle of something the parser asked for."""
        return not self.done and (self.skip_left > 0 or len(self._buf) > 0)


def _le32(data: bytes) -> int:
    return int.from_bytes(data[:4], "little")


class _WavCheck:
    names = ("wav",)

    def __init__(self) -> None:
        self.where = "header"
        self.declared = 0

    def parse(self) -> _Parser:
        riff = yield 12
        rf64 = riff[:4] in (b"RF64", b"BW64")
        ds64_size: int | None = None
        while True:
            chunk = yield 8
            cid, size = chunk[:4], _le32(chunk[4:8])
            if cid == b"ds64" and size >= 16:
                body = yield 16
                ds64_size = int.from_bytes(body[8:16], "little")
                yield -(size - 16 + (size & 1))
            elif cid == b"data":
                if rf64 and size == 0xFFFFFFFF and ds64_size is not None:
                    size = ds64_size
                elif size == 0 or size >= 0x7FFF0000:
                    return  # a streaming writer's "length unknown": nothing to check
                self.where, self.declared = "data", size
                yield -size
                return
            else:
                yield -(size + (size & 1))

    def verdict(self, walk: _Walk) -> str | None:
        if walk.done:
            return None
        if self.where == "data":
            got = self.declared - walk.skip_left
            return f"the WAV header declares {self.declared} bytes of audio but {got} arrived"
        return "the WAV header is incomplete"


class _OggCheck:
    names = ("ogg",)

    def __init__(self) -> None:
        self.open_streams: set[int] = set()

    def parse(self) -> _Parser:
        while True:
            page = yield 27
            if page[:4] != b"OggS":
                return  # lost sync: ffmpeg resynchronises and judges the rest
            flags, serial, segments = page[5], _le32(page[14:18]), page[26]
            lacing = (yield segments) if segments else b""
            if flags & 0x02:
                self.open_streams.add(serial)
            if flags & 0x04:
                self.open_streams.discard(serial)
            yield -sum(lacing)

    def verdict(self, walk: _Walk) -> str | None:
        if walk.done:
            return None
        if walk.partial:
            return "the Ogg stream ends in the middle of a page"
        if self.open_streams:
            return "the Ogg stream has no end-of-stream page"
        return None


# MPEG audio: kbit/s by [version is MPEG-1][layer 1..3][index], and sample rates by version.
_MPEG_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass(frozen=True, slots=True)
class _MpegFrame:
    version: int  # 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    layer: int
    rate: int
    length: int  # bytes, header included
    mono: bool

    @property
    def side_info(self) -> int:
        """Bytes of Layer III side information after the header (where a Xing tag starts)."""
        if self.version == 3:
            return 17 if self.mono else 32
        return 9 if self.mono else 17


def _mpeg_frame(header: bytes) -> _MpegFrame | None:
    """Parse a 4-byte MPEG audio frame header; None if it is not one (or is free-format)."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (header[1] >> 3) & 3, (header[1] >> 1) & 3
    bitrate_index, rate_index = header[2] >> 4, (header[2] >> 2) & 3
    if version == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    layer = 4 - layer_bits
    kbps = _MPEG_BITRATES[(version == 3, layer)][bitrate_index]
    rate = _MPEG_RATES[version][rate_index]
    padding = (header[2] >> 1) & 1
    if layer == 1:
        length = (12 * kbps * 1000 // rate + padding) * 4
    elif layer == 3 and version != 3:
        length = 72 * kbps * 1000 // rate + padding
    else:
        length = 144 * kbps * 1000 // rate + padding
    return _MpegFrame(version, layer, rate, length, mono=(header[3] >> 6) == 3)


class _Mp3Check:
    names = ("mp3",)

    def __init__(self) -> None:
        self.where = "start"
        self.frames = 0
        self.declared_frames: int | None = None
        self.stopped_at = b""

    def parse(self) -> _Parser:
        first = yield 3
        if first == b"ID3":
            rest = yield 7
            size = sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(rest[3:7]))
            self.where = "tag"
            yield -(size + (10 if rest[2] & 0x10 else 0))
            self.where = "start"
            header = yield 4
        else:
            header = first + (yield 1)
        start = _mpeg_frame(header)
        frame = start
        while frame is not None and start is not None and (
            (frame.version, frame.layer, frame.rate) == (start.version, start.layer, start.rate)
        ):
            self.where = "frame"
            self.frames += 1
            body = frame.length - 4
            if self.frames == 1 and frame.layer == 3 and frame.side_info + 12 <= body:
                info = yield frame.side_info + 12
                body -= len(info)
                tag = info[frame.side_info:]
                if tag[:4] in (b"Xing", b"Info") and tag[7] & 0x01:
                    self.declared_frames = int.from_bytes(tag[8:12], "big")
            yield -body
            self.where = "between"
            header = yield 4
            frame = _mpeg_frame(header)
        self.where, self.stopped_at = "after", header

    def verdict(self, walk: _Walk) -> str | None:
        if self.where == "tag" and walk.partial:
            return "the MP3 ends inside its ID3 tag"
        if self.where == "frame" and walk.partial:
            return "the MP3 ends in the middle of a frame"
        # Frames are only counted against the Xing/Info total (which leaves out the Info frame
        # itself) when the walk reached the end: at a frame boundary or a trailing tag.
        walked = self.frames - 1
        clean_end = (self.where == "between" and not walk.partial) or (
            self.where == "after" and self.stopped_at.startswith((b"TAG", b"APE", b"LYR")))
        if self.declared_frames is not None and clean_end and walked < self.declared_frames:
            return f"the MP3 header counts {self.declared_frames} frames but {walked} arrived"
        return None


_Check = _WavCheck | _OggCheck | _Mp3Check

# Magic bytes that say "this is an audio container", for a clearer error when ffmpeg cannot
# open such a file: (offset, bytes, name).
_MAGIC = (
    (0, b"RIFF", "WAV"), (0, b"RF64", "WAV"), (0, b"BW64", "WAV"), (0, b"OggS", "Ogg"),
    (0, b"fLaC", "FLAC"), (0, b"ID3", "MP3"), (0, b"#!AMR", "AMR"), (0, b"FORM", "AIFF"),
    (0, b".snd", "AU"), (0, b"caff", "CAF"), (4, b"ftyp", "MP4"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska"), (0, b"wvpk", "WavPack"),
)


class _Inspector:
    """Watches the bytes fed to ffmpeg: counts them, names the container from its magic bytes
    and walks WAV, Ogg and MP3 structure to tell whether the stream was cut short."""

    def __init__(self) -> None:
        self.size = 0
        self.kind: str | None = None
        self._head = bytearray()
        self._check: _Check | None = None
        self._walk: _Walk | None = None
        self._decided = False

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self._decided:
            if self._walk is not None:
                self._walk.feed(data)
            return
        self._head += data
        if len(self._head) >= 12:
            self._decide()

    def _decide(self) -> None:
        self._decided = True
        head = bytes(self._head)
        self._head = bytearray()
        self.kind = next((name for at, magic, name in _MAGIC
                          if head[at:at + len(magic)] == magic), None)
        if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
            self._check = _WavCheck()
        elif head[:4] == b"OggS":
            self._check = _OggCheck()
        elif head[:3] == b"ID3" or _mpeg_frame(head[:4]) is not None:
            self._check = _Mp3Check()
        if self._check is not None:
            self._walk = _Walk(self._check.parse())
            self._walk.feed(head)

    def truncation(self, ffmpeg_format: str | None) -> str | None:
        """Why the stream looks cut short, if the container ffmpeg found (any, if None: ffmpeg
        could not open it) is one we walked."""
        if not self._decided:
            self._decide()
        if self._check is None or self._walk is None:
            return None
        if ffmpeg_format is not None and not set(self._check.names) & set(ffmpeg_format.split(",")):
            return None
        return self._check.verdict(self._walk)


def _declared_shortfall(log: _Log) -> str | None:
    """For containers whose header states the duration: did much less than that decode?"""
    names = set((log.format or "").split(","))
    if not names & {"flac", "matroska", "mov"} or not log.declared_duration:
        return None
    declared, decoded = log.declared_duration, log.duration
    if decoded < declared - _DURATION_SLACK - declared / 100:
        return f"the header says {declared:.2f} s but only {decoded:.2f} s could be decoded"
    return None


# -- processes -----------------------------------------------------------------------------------

_GLOBAL_ARGS = ["-hide_banner", "-nostdin", "-nostats"]


def _decoder_args(output: Rendition | None, silence: Sequence[tuple[float, float]],
                  channels: int | None = None) -> list[str]:
    """The first (or only) ffmpeg: decode the first audio stream, silence, encode or discard.
    Opus is encoded here only when ``channels`` is known; otherwise this passes PCM on to an
    encoder started once the decoder has named the channel count."""
    stream = ffmpeg.input(
        "pipe:0",
        format_whitelist=",".join(INPUT_FORMATS),
        protocol_whitelist="pipe",
        err_detect="crccheck+bitstream+buffer",
    )["a:0"]
    if silence and output is Rendition.OPUS:
        # A lossy codec smears: the decoded Opus rings on for ~35 ms after audio stops and
        # pre-echoes before it starts. Silence a little more so each range decodes silent.
        silence = _check_silence([(max(0.0, a - _OPUS_GUARD), b + _OPUS_GUARD)
                                  for a, b in silence])
    if silence:
        stream = (
            stream.filter("asetnsamples", n=_SILENCE_FRAME, p=0)
            .filter("asetpts", "N/SR/TB")
            .filter("volume", volume=_mute_expression(silence), eval="frame", precision="fixed")
        )
    else:
        stream = stream.filter("asetpts", "N/SR/TB")
    options: dict[str, Any]
    if output is None:
        node = stream.output("-", f="null")
    elif output is Rendition.FLAC:
        stream = stream.filter("asetnsamples", n=_FLAC_FRAME, p=0)
        node = stream.output("pipe:1", **output.output_options())
    elif channels is not None:
        node = stream.output("pipe:1", **output.output_options(channels))
    else:
        options = {"c:a": "pcm_f32le", "map_metadata": "-1", "f": "nut"}
        node = stream.output("pipe:1", **options)
    args: list[str] = node.get_args()
    return [*_GLOBAL_ARGS, "-loglevel", "repeat+level+info", "-progress", "pipe:2", *args]


def _encoder_args(output: Rendition, channels: int) -> list[str]:
    """The second ffmpeg of the Opus path: the decoder's NUT/PCM in, the rendition out."""
    args: list[str] = (
        ffmpeg.input("pipe:0", f="nut").output("pipe:1", **output.output_options(channels))
        .get_args()
    )
    return [*_GLOBAL_ARGS, "-loglevel", "repeat+level+warning", *args]


def _kill(proc: asyncio.subprocess.Process | None) -> None:
    if proc is not None and proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


async def _settle(*tasks: asyncio.Task[Any] | None) -> None:
    """Wait for tasks to finish without raising their errors or cancelling them."""
    pending = [t for t in tasks if t is not None]
    if pending:
        await asyncio.wait(pending)


async def _cancel(*tasks: asyncio.Task[Any] | None) -> None:
    for task in tasks:
        if task is not None:
            task.cancel()
    await _settle(*tasks)


async def _uncancellable(cleanup: Awaitable[None]) -> None:
    """Run ``cleanup`` to its end even if the caller is cancelled meanwhile (then re-raise the
    cancellation): a job must never leave a process behind."""
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


class _Output:
    """``TranscodeJob.output``: the rendition's bytes; raises the job's error instead of ending."""

    def __init__(self, job: "TranscodeJob") -> None:
        self._job = job

    def __aiter__(self) -> "_Output":
        return self

    async def __anext__(self) -> bytes:
        return await self._job._next_chunk()


class TranscodeJob:
    """One upload going through ffmpeg, made by :meth:`Transcoder.transcode`.

    Read ``output`` to its end, then ask for :meth:`facts`. ``output`` ends only if ffmpeg
    succeeded and the input passed every check; otherwise its last step raises the job's error
    (the same one :meth:`facts` raises), so whatever stores the output must treat an exception
    from it as "discard what you wrote". Both are valid only inside the ``async with`` block."""

    def __init__(self, ffmpeg_path: str, source: AsyncIterator[bytes], output: Rendition | None,
                 silence: tuple[tuple[float, float], ...], channels: int | None = None) -> None:
        self._ffmpeg = ffmpeg_path
        self._source = source
        self._rendition = output
        self._silence = silence
        self._channels = channels
        # Opus needs the channel count before encoding (the bit rate is per channel): unless
        # the caller knows it, a second ffmpeg encodes once the first has decoded the header.
        self._two_stage = output is Rendition.OPUS and channels is None
        self._inspector = _Inspector()
        self._log = _Log(on_header=self._on_header)
        self._encoder_log = _Log()
        self._decoder: asyncio.subprocess.Process | None = None
        self._encoder: asyncio.subprocess.Process | None = None
        self._pipe_read: int | None = None  # the encoder's stdin until it is started
        self._tasks: list[asyncio.Task[None]] = []
        self._feeder: asyncio.Task[None] | None = None
        self._encoder_ready: asyncio.Task[None] | None = None
        self._source_error: Exception | None = None
        self._refusal: AudioError | None = None  # decided while running (a video)
        self._outcome: AudioFacts | BaseException | None = None
        self._settled = asyncio.Event()
        self._reads = 0  # output reads in progress
        self._closed = False
        #: The rendition as it comes out of ffmpeg, in chunks of up to 64 KiB.
        self.output: AsyncIterator[bytes] = _Output(self)

    @property
    def pids(self) -> tuple[int, ...]:
        """Process ids of the job's ffmpeg processes so far (for diagnostics and tests)."""
        return tuple(p.pid for p in (self._decoder, self._encoder) if p is not None)

    async def facts(self) -> AudioFacts:
        """The input's facts, once ffmpeg has exited. Raises the job's error (an
        :class:`AudioError`, or the source's own exception) if it failed. ``output`` must have
        been read to its end first (or be being read by another task)."""
        if self._outcome is None and self._reads:
            await self._settled.wait()
        if self._outcome is None:
            raise RuntimeError("read the job's output to its end before asking for its facts")
        return self._result()

    # -- running ---------------------------------------------------------------------------------

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        args = _decoder_args(self._rendition, self._silence, self._channels)
        stdout: int = asyncio.subprocess.DEVNULL
        write_end: int | None = None
        if self._two_stage:
            self._pipe_read, write_end = os.pipe()
            stdout = write_end
        elif self._rendition is not None:
            stdout = asyncio.subprocess.PIPE
        try:
            self._decoder = await asyncio.create_subprocess_exec(
                self._ffmpeg, *args, stdin=asyncio.subprocess.PIPE, stdout=stdout,
                stderr=asyncio.subprocess.PIPE)
        finally:
            if write_end is not None:
                os.close(write_end)  # the decoder has its own copy; EOF reaches the encoder
        assert self._decoder.stderr is not None
        self._tasks.append(loop.create_task(_read_log(self._decoder.stderr, self._log)))
        self._feeder = loop.create_task(self._feed())
        if self._two_stage:
            self._encoder_ready = loop.create_task(self._start_encoder())

    def _on_header(self, log: _Log) -> None:
        """ffmpeg has described the input: refuse a video now rather than decode all of it."""
        if log.video and self._refusal is None:
            self._refusal = NotAudioError(
                "the upload contains video; only audio recordings are accepted")
            self._kill_all()

    async def _start_encoder(self) -> None:
        assert self._pipe_read is not None
        try:
            await self._log.header_done.wait()
            audio = self._log.audio
            if self._refusal is not None or audio is None:
                return
            match = _AUDIO.match(audio.desc)
            channels = (_channels(match["layout"]) if match else None) or 1
            self._encoder = await asyncio.create_subprocess_exec(
                self._ffmpeg, *_encoder_args(Rendition.OPUS, channels), stdin=self._pipe_read,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            assert self._encoder.stderr is not None
            self._tasks.append(asyncio.get_running_loop().create_task(
                _read_log(self._encoder.stderr, self._encoder_log)))
        finally:
            os.close(self._pipe_read)
            self._pipe_read = None

    async def _feed(self) -> None:
        """Copy ``source`` into the decoder's stdin, then close it."""
        assert self._decoder is not None and self._decoder.stdin is not None
        stdin = self._decoder.stdin
        source = self._source
        exhausted = False
        try:
            while True:
                try:
                    chunk = await anext(source)
                except StopAsyncIteration:
                    exhausted = True
                    break
                except Exception as exc:  # noqa: BLE001 - the client's failure is the caller's
                    self._source_error = exc
                    self._kill_all()
                    return
                if not chunk:
                    continue
                self._inspector.feed(chunk)
                try:
                    stdin.write(chunk)
                    await stdin.drain()
                except ConnectionError:
                    return  # ffmpeg stopped reading; its exit status says why
        finally:
            stdin.close()
            if not exhausted:
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()

    def _kill_all(self) -> None:
        _kill(self._decoder)
        _kill(self._encoder)

    async def _next_chunk(self) -> bytes:
        if self._closed and self._outcome is None:
            raise RuntimeError("the job's context has exited: its output is gone")
        self._reads += 1
        try:
            if self._outcome is None:
                if self._encoder_ready is not None:
                    await asyncio.shield(self._encoder_ready)
                proc = self._encoder if self._two_stage else self._decoder
                if proc is not None and proc.stdout is not None:
                    chunk = await proc.stdout.read(CHUNK_SIZE)
                    if chunk:
                        return chunk
                await self._finish()
            self._result()
            raise StopAsyncIteration
        finally:
            self._reads -= 1

    async def _finish(self) -> None:
        """Wait for every process to exit, then decide the outcome."""
        if self._outcome is not None:
            return
        await _settle(self._encoder_ready)
        for proc in (self._decoder, self._encoder):
            if proc is not None:
                await proc.wait()
        # ffmpeg no longer reads: stop waiting on the client for bytes nobody needs.
        await _cancel(self._feeder)
        await _settle(*self._tasks)
        if self._outcome is None:
            self._outcome = self._decide()
            self._settled.set()

    def _result(self) -> AudioFacts:
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome

    def _decide(self) -> AudioFacts | BaseException:
        """The job's result from the exit statuses, ffmpeg's log and the container checks."""
        return self._failure() or self._facts()

    def _failure(self) -> BaseException | None:  # noqa: PLR0911, PLR0912 - one ladder, in order
        """Why the job failed, most telling reason first; None if it did not."""
        if self._source_error is not None:
            return self._source_error
        if self._refusal is not None:
            return self._refusal
        if self._inspector.size == 0:
            return EmptyAudioError("the upload is empty")
        log, decoder = self._log, self._decoder
        assert decoder is not None
        if log.format is None or log.open_failed:
            if truncated := self._inspector.truncation(None):
                return UndecodableAudioError(f"the audio is truncated: {truncated}")
            if self._inspector.kind is not None:
                return UndecodableAudioError(
                    f"the upload looks like {self._inspector.kind} but cannot be read: "
                    f"{log.first_error()}")
            return NotAudioError("the upload is not in a recognised audio format")
        if log.video:
            return NotAudioError("the upload contains video; only audio recordings are accepted")
        audio = log.audio
        if audio is None or log.no_stream:
            return NotAudioError("the upload contains no audio stream")
        if self._encoder is not None and self._encoder.returncode != 0:
            # Before the decoder's errors: a failed encoder makes the decoder fail to write.
            return AudioError(
                f"the {self._rendition} encoder failed: {self._encoder_log.first_error()}")
        if self._two_stage and self._encoder is None:
            return AudioError("the Opus encoder was not started")
        truncated = self._inspector.truncation(log.format) or _declared_shortfall(log)
        if truncated:
            return UndecodableAudioError(f"the audio is truncated: {truncated}")
        if log.errors:
            return UndecodableAudioError(f"the audio is corrupt: {log.first_error()}")
        if decoder.returncode != 0:
            return UndecodableAudioError(
                f"ffmpeg could not decode the audio (exit status {decoder.returncode})")
        match = _AUDIO.match(audio.desc)
        if match is None or _channels(match["layout"]) is None:
            return UndecodableAudioError(f"unsupported audio stream: {audio.desc}")
        if log.duration <= 0:
            return UndecodableAudioError("the upload contains no audio samples")
        return None

    def _facts(self) -> AudioFacts:
        """The facts of an input that :meth:`_failure` accepted."""
        log = self._log
        assert log.format is not None and log.audio is not None
        match = _AUDIO.match(log.audio.desc)
        assert match is not None
        channels = _channels(match["layout"])
        assert channels is not None
        return AudioFacts(
            format=log.format,
            codec=match["codec"],
            sample_rate=int(match["rate"]),
            channels=channels,
            duration=log.duration,
            bit_rate=round(self._inspector.size * 8 / log.duration),
        )

    async def _close(self) -> None:
        """Leave nothing behind: kill and reap the processes, stop the tasks, close the pipes."""
        self._closed = True
        self._settled.set()  # a facts() waiting on a reader that went away stops waiting
        if self._outcome is None:
            self._kill_all()
        await _cancel(self._feeder, self._encoder_ready)
        if self._pipe_read is not None:  # the encoder-starting task never ran
            os.close(self._pipe_read)
            self._pipe_read = None
        for proc in (self._decoder, self._encoder):
            if proc is None:
                continue
            if proc.stdin is not None:
                proc.stdin.close()
            if proc.stdout is not None:
                # Drain to EOF so the pipe transport closes (the process is dead or finished).
                while await proc.stdout.read(CHUNK_SIZE):
                    pass
            await proc.wait()
        await _settle(*self._tasks)


_HELD: contextvars.ContextVar[tuple["Transcoder", ...]] = contextvars.ContextVar(
    "ingest_audio_held_permits", default=())


class Transcoder:
    """Runs ffmpeg on uploads, at most ``concurrency`` jobs at once (default: one per CPU)."""

    def __init__(self, ffmpeg: str | None = None, concurrency: int | None = None) -> None:
        self.ffmpeg = ffmpeg or find_ffmpeg()
        self.concurrency = concurrency or os.cpu_count() or 1
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._semaphore = asyncio.Semaphore(self.concurrency)

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        """Hold one permit for every job started inside this block (in this task or tasks it
        starts), instead of one each.

        Jobs fed from one :func:`ingest.streams.tee` must run together: if each took its own
        permit, uploads holding one permit and waiting for a second would deadlock (the tee
        cannot feed the running job while the other branch is not read). Those jobs must end
        before the block does."""
        if self in _HELD.get():
            yield
            return
        async with self._semaphore:
            token = _HELD.set((*_HELD.get(), self))
            try:
                yield
            finally:
                _HELD.reset(token)

    async def probe(self, source: AsyncIterator[bytes]) -> AudioFacts:
        """Decode all of ``source`` and return its facts (see the module doc for refusals)."""
        async with self.permit():
            job = TranscodeJob(self.ffmpeg, source, None, ())
            try:
                await job._start()
                await job._finish()
                return job._result()
            finally:
                await _uncancellable(job._close())

    def transcode(
        self, source: AsyncIterator[bytes], *, output: Rendition,
        silence: Sequence[tuple[float, float]] = (), channels: int | None = None,
    ) -> contextlib.AbstractAsyncContextManager[TranscodeJob]:
        """Transcode ``source`` into ``output``, silencing ``silence`` ranges (seconds from the
        start; ValueError unless 0 <= start < end). Use as ``async with``; the job's ``output``
        streams the rendition, then :meth:`TranscodeJob.facts` gives the input's facts.

        ``channels``, when the caller has read it from the input's header, lets one ffmpeg
        process decode and encode Opus (about 8% less CPU than two)."""
        if channels is not None and channels < 1:
            raise ValueError("channels must be at least 1")
        return self._job(source, Rendition(output), _check_silence(silence), channels)

    @contextlib.asynccontextmanager
    async def _job(self, source: AsyncIterator[bytes], output: Rendition,
                   silence: tuple[tuple[float, float], ...],
                   channels: int | None) -> AsyncIterator[TranscodeJob]:
        async with self.permit():
            job = TranscodeJob(self.ffmpeg, source, output, silence, channels)
            try:
                await job._start()
                yield job
            finally:
                await _uncancellable(job._close())
