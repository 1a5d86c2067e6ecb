"""The in-process WAV check agrees with ffmpeg and catches what ffmpeg would."""

import struct

import pytest

from ingest import wav
from ingest.audio import Transcoder, UndecodableAudioError
from storage.base import iter_bytes
from tests.ingest import media


async def _check(data: bytes) -> tuple[bytes, wav.WavWatch | None]:
    head, rest = await wav.peek(iter_bytes(data, 1000))
    header = wav.parse_header(head)
    if header is None:
        return head, None
    watch = wav.WavWatch(header)
    out = b"".join([c async for c in watch.watch(head, rest)])
    return out, watch


@pytest.mark.parametrize(("make", "codec"), [
    (lambda: media.wav(2.0), "pcm_s16le"),
    (lambda: media.wav(2.0, channels=2), "pcm_s16le"),
    (lambda: media.wav(1.5, rate=16000), "pcm_s16le"),
    (lambda: media.ffmpeg("-f", "lavfi", "-i", "sine=d=2:r=8000", "-c:a", "pcm_alaw", "-f",
                          "wav", "pipe:1"), "pcm_alaw"),
    (lambda: media.ffmpeg("-f", "lavfi", "-i", "sine=d=2:r=8000", "-c:a", "pcm_mulaw", "-f",
                          "wav", "pipe:1"), "pcm_mulaw"),
])
async def test_facts_match_ffmpeg_and_bytes_pass_unchanged(make: object, codec: str) -> None:
    data = make()  # type: ignore[operator]
    out, watch = await _check(data)
    assert watch is not None and out == data
    ours, theirs = watch.facts(), await Transcoder().probe(iter_bytes(data))
    assert ours.codec == theirs.codec == codec
    assert (ours.sample_rate, ours.channels) == (theirs.sample_rate, theirs.channels)
    assert abs(ours.duration - theirs.duration) < 0.01
    assert ours.media_type() == "audio/wav"


async def test_truncated_wav_is_refused() -> None:
    data = media.wav(2.0)
    _, watch = await _check(data[: len(data) // 2])
    assert watch is not None
    with pytest.raises(UndecodableAudioError, match="truncated"):
        watch.facts()


async def test_streaming_writer_length_is_not_checked() -> None:
    data = bytearray(media.wav(1.0))
    pos = data.index(b"data")
    data[pos + 4:pos + 8] = struct.pack("<I", 0xFFFFFFFF)
    _, watch = await _check(bytes(data[:-100]))
    assert watch is not None
    assert watch.facts().duration > 0.9


@pytest.mark.parametrize("data", [
    b"", b"RIFF", b"hello world" * 100, media.mp3(0.5), media.ogg_opus(0.5),
    # A WAV of a compressed codec (GSM 6.10 would be tag 0x31) goes to ffmpeg.
    b"RIFF\0\0\0\0WAVEfmt \x14\0\0\0\x31\0\x01\0\x40\x1f\0\0\x59\x06\0\0\x41\0\0\0"
    b"\x02\0\x40\x01data\0\0\0\0",
])
async def test_anything_else_goes_to_ffmpeg(data: bytes) -> None:
    _, watch = await _check(data)
    assert watch is None


async def test_header_after_other_chunks_is_found() -> None:
    data = media.wav(1.0)
    listing = b"LIST" + struct.pack("<I", 26) + b"INFOISFT\x0e\0\0\0council pbx\0\0\0"
    with_list = data[:12] + listing + data[12:]
    out, watch = await _check(with_list)
    assert watch is not None and out == with_list
    assert abs(watch.facts().duration - 1.0) < 0.01
