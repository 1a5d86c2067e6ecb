"""PCM and G.711 WAV, checked in-process as it streams: the common telephony upload.

Such audio needs no decoding: every byte after a valid header is a sample, so a header that
names a sample format and a data chunk, plus a count of the bytes that arrive, prove the upload
is audio, give its exact facts, and show truncation (the header declares more bytes than came).
Starting ffmpeg to decode it would cost about 100 ms of wall time per recording on this kind of
machine for no more certainty, and would bound the "keep the original" path far below the
store's own speed. Anything else (compressed audio, a WAV whose header this does not recognise
in its first bytes) goes to ffmpeg.
"""

import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ingest.audio import AudioFacts, UndecodableAudioError

HEAD = 4096  # bytes read before deciding; a header not found by then goes to ffmpeg
_UNKNOWN = (0, 0xFFFFFFFF)  # data sizes streaming writers put when the length is not known
_CODECS = {(1, 8): "pcm_u8", (1, 16): "pcm_s16le", (1, 24): "pcm_s24le",
           (1, 32): "pcm_s32le", (3, 32): "pcm_f32le", (3, 64): "pcm_f64le",
           (6, 8): "pcm_alaw", (7, 8): "pcm_mulaw"}
_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True, slots=True)
class WavHeader:
    codec: str
    sample_rate: int
    channels: int
    block_align: int
    data_offset: int
    declared: int | None  # bytes of audio the header announces; None: a streaming writer's


def parse_header(head: bytes) -> WavHeader | None:
    """The header of a PCM/G.711 WAV whose data chunk starts within ``head``, else ``None``."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt " and size >= 16 and body + 16 <= len(head):
            tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", head, body)
            if tag == _EXTENSIBLE and size >= 40 and body + 26 <= len(head):
                tag = struct.unpack_from("<H", head, body + 24)[0]
            fmt = (_CODECS.get((tag, bits)), channels, rate, align)
        elif cid == b"data":
            if fmt is None or fmt[0] is None or not fmt[1] or not fmt[2] or not fmt[3]:
                return None
            codec, channels, rate, align = fmt
            assert codec is not None
            return WavHeader(codec, rate, channels, align, body,
                             None if size in _UNKNOWN else size)
        pos = body + size + (size & 1)
    return None


class WavWatch:
    """Passes a WAV upload through unchanged while counting its audio bytes."""

    def __init__(self, header: WavHeader) -> None:
        self.header = header
        self.size = 0

    async def watch(self, head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        self.size = len(head)
        yield head
        async for chunk in rest:
            self.size += len(chunk)
            yield chunk

    def facts(self) -> AudioFacts:
        """The recording's facts once it has all arrived; ``UndecodableAudioError`` if cut."""
        h = self.header
        audio = self.size - h.data_offset
        if h.declared is not None and audio < h.declared:
            raise UndecodableAudioError(
                f"the audio is truncated: the WAV header declares {h.declared} bytes of audio "
                f"but {max(audio, 0)} arrived")
        frames = min(audio, h.declared or audio) // h.block_align
        return AudioFacts(format="wav", codec=h.codec, sample_rate=h.sample_rate,
                          channels=h.channels, duration=frames / h.sample_rate,
                          bit_rate=h.sample_rate * h.block_align * 8)


async def peek(
    chunks: AsyncIterator[bytes], size: int = HEAD
) -> tuple[bytes, AsyncIterator[bytes]]:
    """Read at least ``size`` bytes (or all there is); return them and the rest of the stream."""
    head = bytearray()
    while len(head) < size:
        try:
            head += await anext(chunks)
        except StopAsyncIteration:
            break
    return bytes(head), chunks
