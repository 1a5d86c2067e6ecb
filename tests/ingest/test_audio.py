"""ingest.audio against the real ffmpeg: facts, renditions, card-payment silence, refusals,
truncation, and that no process outlives a job whatever happens to it."""

import array
import asyncio
import functools
import io
import itertools
import os
import time
import wave
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import imageio_ffmpeg  # type: ignore[import-untyped]
import pytest

from ingest.audio import (
    AudioFacts,
    EmptyAudioError,
    NotAudioError,
    Rendition,
    Transcoder,
    UndecodableAudioError,
    find_ffmpeg,
)
from ingest.streams import tee
from tests.ingest import media

# An unclosed pipe transport or subprocess is a bug here, not noise.
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

TIMEOUT = 30  # seconds: a hang fails the test instead of the suite


# -- helpers -------------------------------------------------------------------------------------

# Generated once per run: each costs an ffmpeg (or sox) process.
wav_mono = functools.cache(lambda: media.wav(3))
wav_stereo = functools.cache(lambda: media.wav(3, channels=2))
mp3_mono = functools.cache(lambda: media.mp3(3))
ogg_mono = functools.cache(lambda: media.ogg_opus(3))
gsm_mono = functools.cache(lambda: media.gsm(3))
flac_mono = functools.cache(lambda: media.flac(3))
m4a_mono = functools.cache(lambda: media.m4a(3))
wav_4s_mono = functools.cache(lambda: media.wav(4))
wav_4s_stereo = functools.cache(lambda: media.wav(4, channels=2))
big_wav = functools.cache(lambda: media.wav(20, rate=48000, channels=2))  # 3.8 MB


async def chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]
        await asyncio.sleep(0)


class ClientGone(Exception):  # noqa: N818 - named for what it stands for, as aiohttp's are
    """What a source raises when the uploading client disconnects."""


async def failing(data: bytes, after: int, error: BaseException) -> AsyncIterator[bytes]:
    """Yield ``after`` bytes of ``data``, then raise ``error``."""
    async for chunk in chunks(data[:after]):
        yield chunk
    raise error


def children() -> list[tuple[int, str]]:
    """(pid, state) of this process's ffmpeg children, zombies included, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren.
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        if int(ppid) == os.getpid() and comm.startswith("ffmpeg"):
            found.append((int(entry.name), state))
    return found


def gone(pids: tuple[int, ...]) -> bool:
    """Every pid is reaped: no /proc entry, or one that is no longer our child."""
    mine = {pid for pid, _ in children()}
    return not any(pid in mine for pid in pids)


async def probe(data: bytes) -> AudioFacts:
    return await asyncio.wait_for(Transcoder().probe(chunks(data)), TIMEOUT)


async def transcode(data: bytes, output: Rendition,
                    silence: tuple[tuple[float, float], ...] = (),
                    channels: int | None = None) -> tuple[bytes, AudioFacts]:
    async def run() -> tuple[bytes, AudioFacts]:
        async with Transcoder().transcode(chunks(data), output=output, silence=silence,
                                          channels=channels) as job:
            out = b"".join([c async for c in job.output])
            return out, await job.facts()
    return await asyncio.wait_for(run(), TIMEOUT)


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """After every test: no ffmpeg child of ours is left, running or zombie."""
    yield
    assert children() == []


# -- find_ffmpeg ---------------------------------------------------------------------------------


@pytest.fixture
def fresh_lookup() -> Iterator[None]:
    find_ffmpeg.cache_clear()
    yield
    find_ffmpeg.cache_clear()


@pytest.mark.usefixtures("fresh_lookup")
def test_find_ffmpeg_prefers_one_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert find_ffmpeg() == str(tmp_path / "ffmpeg")
    assert find_ffmpeg() == str(tmp_path / "ffmpeg")  # cached


@pytest.mark.usefixtures("fresh_lookup")
def test_find_ffmpeg_falls_back_to_imageio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no ffmpeg on PATH
    assert find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()


# -- probe: facts --------------------------------------------------------------------------------


class Expected(NamedTuple):
    make: Callable[[], bytes]
    format: str
    codec: str
    sample_rate: int
    channels: int
    seconds: float
    media_type: str


@pytest.mark.parametrize(
    "expected",
    [
        Expected(wav_mono, "wav", "pcm_s16le", 8000, 1, 3.0, "audio/wav"),
        Expected(wav_stereo, "wav", "pcm_s16le", 8000, 2, 3.0, "audio/wav"),
        # LAME pads the last frame; ffmpeg decodes 3.03 s of it.
        Expected(mp3_mono, "mp3", "mp3", 8000, 1, 3.03, "audio/mpeg"),
        Expected(gsm_mono, "gsm", "gsm", 8000, 1, 3.0, "audio/gsm"),
        # Opus always decodes at 48 kHz, whatever rate it was made from.
        Expected(ogg_mono, "ogg", "opus", 48000, 1, 3.0, "audio/ogg"),
        Expected(flac_mono, "flac", "flac", 8000, 1, 3.0, "audio/flac"),
        Expected(m4a_mono, "mov,mp4,m4a,3gp,3g2,mj2", "aac", 8000, 1, 3.0, "audio/mp4"),
    ],
    ids=["wav-mono", "wav-stereo", "mp3", "gsm", "ogg-opus", "flac", "m4a"],
)
async def test_probe_reports_the_input(expected: Expected) -> None:
    data = expected.make()
    facts = await probe(data)
    assert (facts.format, facts.codec, facts.sample_rate, facts.channels) == (
        expected.format, expected.codec, expected.sample_rate, expected.channels)
    assert facts.duration == pytest.approx(expected.seconds, abs=0.1)
    assert facts.media_type() == expected.media_type
    assert facts.bit_rate == round(len(data) * 8 / facts.duration)


async def test_probe_of_8khz_wav_gives_its_bit_rate() -> None:
    facts = await probe(wav_mono())
    assert facts.bit_rate == pytest.approx(128_000, rel=0.01)  # 8000 x 16 bits, plus a header


async def test_attached_cover_art_is_still_audio() -> None:
    facts = await probe(media.mp3_with_cover(2))
    assert (facts.format, facts.codec) == ("mp3", "mp3")


async def test_a_wav_from_a_streaming_writer_is_accepted() -> None:
    """ffmpeg writing WAV to a pipe cannot fill in the sizes: it leaves 0xFFFFFFFF."""
    data = media.ffmpeg("-f", "lavfi", "-i", "sine=sample_rate=8000:duration=2",
                        "-c:a", "pcm_s16le", "-f", "wav", "-")
    at = data.index(b"data") + 4
    assert data[at:at + 4] == b"\xff\xff\xff\xff"
    facts = await probe(data)
    assert facts.duration == pytest.approx(2.0, abs=0.01)


# -- renditions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("hinted", [False, True], ids=["two-ffmpegs", "one-ffmpeg"])
@pytest.mark.parametrize("channels", [1, 2])
async def test_opus_rendition_decodes_to_the_same_duration_and_channels(
    channels: int, hinted: bool
) -> None:
    data = media.wav(10, channels=channels)
    out, facts = await transcode(data, Rendition.OPUS, channels=channels if hinted else None)
    assert (facts.format, facts.channels, facts.duration) == ("wav", channels, 10.0)
    rendition = await probe(out)
    assert (rendition.format, rendition.codec, rendition.channels) == ("ogg", "opus", channels)
    assert rendition.duration == pytest.approx(10.0, abs=0.05)
    # 16 kb/s per channel against 128 kb/s per channel of 8 kHz 16-bit PCM: about 1/8 or less
    # (measured on a 5-minute mono tone: 0.080; speech uses more of the VBR budget).
    assert 0.03 < len(out) / len(data) < 0.14


@pytest.mark.parametrize("hint", [None, 2], ids=["two-ffmpegs", "one-ffmpeg"])
async def test_opus_keeps_the_two_parties_apart(hint: int | None) -> None:
    out, _ = await transcode(wav_stereo(), Rendition.OPUS, channels=hint)
    samples = array.array("h", media.decode(out, rate=8000))
    left, right = samples[0::2], samples[1::2]
    assert left != right  # 440 Hz and 660 Hz, not a mono downmix
    # Each channel still carries its tone at about -21 dBFS RMS.
    assert media.level_db(out, 0.5, 2.5).mean_db > -25


@pytest.mark.parametrize("make", [wav_mono, wav_stereo], ids=["mono", "stereo"])
async def test_flac_rendition_is_lossless(make: Callable[[], bytes]) -> None:
    data = make()
    out, facts = await transcode(data, Rendition.FLAC)
    assert out[:4] == b"fLaC"
    assert facts.codec == "pcm_s16le"
    with wave.open(io.BytesIO(data)) as original:
        pcm = original.readframes(original.getnframes())
    assert media.decode(out) == pcm


@pytest.mark.parametrize(("hint", "processes"), [(None, 2), (1, 1)])
async def test_a_known_channel_count_encodes_opus_in_one_process(
    hint: int | None, processes: int
) -> None:
    async with Transcoder().transcode(chunks(wav_mono()), output=Rendition.OPUS,
                                      channels=hint) as job:
        out = b"".join([c async for c in job.output])
        assert len(job.pids) == processes
    assert (await probe(out)).codec == "opus"


async def test_a_channel_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="channels"):
        Transcoder().transcode(chunks(wav_mono()), output=Rendition.OPUS, channels=0)


def test_renditions_name_their_media_types() -> None:
    assert (Rendition.OPUS.media_type, Rendition.OPUS.extension) == (
        "audio/ogg; codecs=opus", "opus")
    assert (Rendition.FLAC.media_type, Rendition.FLAC.extension) == ("audio/flac", "flac")
    assert Rendition.OPUS.output_options(2)["b:a"] == "32000"
    assert Rendition.OPUS.output_args()[:2] == ["-c:a", "libopus"]


# -- card-payment silence ------------------------------------------------------------------------

RANGES = ((0.5, 1.25), (2.013, 2.517))  # one on frame boundaries, one not


@pytest.mark.parametrize("make", [wav_4s_mono, wav_4s_stereo], ids=["mono", "stereo"])
async def test_flac_is_digitally_silent_in_card_ranges(
    make: Callable[[], bytes],
) -> None:
    out, facts = await transcode(make(), Rendition.FLAC, RANGES)
    assert facts.duration == 4.0
    assert media.duration(out) == pytest.approx(4.0, abs=0.001)
    for start, end in RANGES:
        level = media.level_db(out, start, end)
        assert level.max_db == float("-inf"), (start, end, level)
        # Silence reaches at most one 20 ms frame beyond the range: the tone is back after it.
        assert media.level_db(out, end + 0.025, end + 0.2).mean_db > -25
        assert media.level_db(out, start - 0.2, start - 0.025).mean_db > -25
    assert media.level_db(out, 3.0, 4.0).mean_db > -25


@pytest.mark.parametrize("hinted", [False, True], ids=["two-ffmpegs", "one-ffmpeg"])
@pytest.mark.parametrize(("make", "channels"), [(wav_4s_mono, 1), (wav_4s_stereo, 2)],
                         ids=["mono", "stereo"])
async def test_opus_is_silent_in_card_ranges(
    make: Callable[[], bytes], channels: int, hinted: bool
) -> None:
    """Opus was fed digital silence (ranges widened by 0.1 s against the codec's smear); what
    its decoder makes of it is its noise floor: measured -99 dB RMS / -92 dB peak in mono,
    -96.5 / -86 dB in coupled stereo, against -21 dB RMS for the tone."""
    out, _ = await transcode(make(), Rendition.OPUS, RANGES, channels if hinted else None)
    for start, end in RANGES:
        level = media.level_db(out, start, end)
        assert level.mean_db <= -90, (start, end, level)
        assert level.max_db <= -80, (start, end, level)
    assert media.level_db(out, 1.5, 1.8).mean_db > -25
    assert media.level_db(out, 3.0, 4.0).mean_db > -25


@pytest.mark.parametrize(
    "silence",
    [((2.0, 1.0),), ((1.0, 1.0),), ((-0.5, 1.0),), ((float("nan"), 1.0),), ((0, float("inf")),)],
)
def test_bad_silence_ranges_are_refused_before_anything_runs(
    silence: tuple[tuple[float, float], ...],
) -> None:
    source = chunks(b"never read")
    with pytest.raises(ValueError, match="silence range"):
        Transcoder().transcode(source, output=Rendition.FLAC, silence=silence)


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [media.not_audio, lambda: media.random_bytes(50_000), media.video],
    ids=["text", "random-bytes", "video"],
)
async def test_non_audio_is_refused(make: Callable[[], bytes]) -> None:
    data = make()
    with pytest.raises(NotAudioError):
        await probe(data)
    for rendition in Rendition:
        with pytest.raises(NotAudioError):
            await transcode(data, rendition)


async def test_a_video_is_refused_before_it_is_all_read() -> None:
    """ffmpeg describes the input after a few KiB: the job is stopped there."""
    data = media.video(20)
    sent = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal sent
        async for chunk in chunks(data, 1024):
            sent += len(chunk)
            yield chunk

    with pytest.raises(NotAudioError, match="video"):
        await asyncio.wait_for(Transcoder().probe(counted()), TIMEOUT)
    assert sent < len(data)


async def test_empty_input_is_refused_as_undecodable() -> None:
    with pytest.raises(EmptyAudioError) as caught:
        await probe(b"")
    assert isinstance(caught.value, UndecodableAudioError)
    assert str(caught.value) == "the upload is empty"
    for rendition in Rendition:
        with pytest.raises(EmptyAudioError):
            await transcode(b"", rendition)


async def test_a_wav_without_samples_is_undecodable() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
    with pytest.raises(UndecodableAudioError, match="no audio samples"):
        await probe(buffer.getvalue())


def _mp3_frames_start(data: bytes) -> int:
    """Offset of the first MPEG frame, after the ID3v2 tag ffmpeg writes."""
    assert data[:3] == b"ID3"
    return 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10]))


@pytest.mark.parametrize(
    ("make", "cut", "reason"),
    [
        (wav_mono, lambda d: len(d) // 2, "WAV header declares 48000 bytes of audio but"),
        (wav_mono, lambda d: 30, "WAV header is incomplete"),
        (mp3_mono, lambda d: len(d) // 2 + 7, "MP3 ends in the middle of a frame"),
        # 8 kHz 32 kb/s MPEG-2.5 frames are 288 bytes: a cut between two of them.
        (mp3_mono, lambda d: _mp3_frames_start(d) + 288 * 30,
         "MP3 header counts 44 frames but 29 arrived"),
        (ogg_mono, lambda d: len(d) // 2, "Ogg stream ends in the middle of a page"),
        (ogg_mono, lambda d: d.rindex(b"OggS"), "Ogg stream has no end-of-stream page"),
        (flac_mono, lambda d: len(d) * 3 // 4, "header says 3.00 s but only"),
        (m4a_mono, lambda d: len(d) * 3 // 4, "header says 3.00 s but only"),
    ],
    ids=["wav", "wav-header", "mp3-mid-frame", "mp3-between-frames", "ogg-mid-page",
         "ogg-no-last-page", "flac", "m4a"],
)
async def test_truncated_audio_is_undecodable(make: Callable[[], bytes],
                                              cut: Callable[[bytes], int], reason: str) -> None:
    data = make()
    with pytest.raises(UndecodableAudioError, match=f"the audio is truncated: the {reason}"):
        await probe(data[:cut(data)])


async def test_a_partial_gsm_frame_is_undecodable() -> None:
    data = gsm_mono()
    with pytest.raises(UndecodableAudioError, match="corrupt"):
        await probe(data[:33 * 50 + 10])


async def test_gsm_cut_between_frames_cannot_be_told_from_a_short_call() -> None:
    """Raw GSM has no header: a cut on a 33-byte frame boundary is a shorter recording."""
    facts = await probe(gsm_mono()[:33 * 50])
    assert facts.duration == pytest.approx(1.0)


async def test_corrupt_frames_are_undecodable() -> None:
    data = bytearray(mp3_mono())
    data[6000:6300] = media.random_bytes(300)
    with pytest.raises(UndecodableAudioError, match="the audio is corrupt"):
        await probe(bytes(data))


async def test_an_audio_container_ffmpeg_cannot_open_is_undecodable() -> None:
    with pytest.raises(UndecodableAudioError, match="looks like WAV but cannot be read"):
        await probe(b"RIFF" + media.random_bytes(5000))


async def test_output_raises_instead_of_ending_when_the_input_is_bad() -> None:
    """A consumer storing the output sees the error before it could mark anything complete."""
    received = 0
    with pytest.raises(UndecodableAudioError, match="truncated"):
        async with Transcoder().transcode(chunks(wav_mono()[:30_000]),
                                          output=Rendition.FLAC) as job:
            async for chunk in job.output:
                received += len(chunk)
    assert received  # the audio before the cut did stream out


async def test_facts_before_reading_output_is_a_usage_error() -> None:
    async with Transcoder().transcode(chunks(wav_mono()), output=Rendition.OPUS) as job:
        with pytest.raises(RuntimeError, match="read the job's output"):
            await job.facts()


# -- failures of the source and of the consumer --------------------------------------------------


@pytest.mark.parametrize("rendition", [None, Rendition.OPUS, Rendition.FLAC],
                         ids=["probe", "opus", "flac"])
async def test_a_failing_source_propagates_its_own_exception(rendition: Rendition | None) -> None:
    error = ClientGone("the telephony system hung up")
    source = failing(media.wav(5), 20_000, error)
    pids: tuple[int, ...] = ()
    with pytest.raises(ClientGone) as caught:
        if rendition is None:
            await asyncio.wait_for(Transcoder().probe(source), TIMEOUT)
        else:
            async with Transcoder().transcode(source, output=rendition) as job:
                pids = job.pids
                async for _ in job.output:
                    pass
    assert caught.value is error
    assert gone(pids)


async def test_a_consumer_that_stops_early_leaves_nothing_behind() -> None:
    """The consumer stops while ffmpeg has filled its stdout pipe (so the reader is paused and
    the process blocked): the job still kills, drains and reaps it, and closes the source."""
    data = big_wav()
    closed = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks(data, 65536):
                yield chunk
        finally:
            closed.set()

    async def stop_early(rendition: Rendition) -> tuple[int, ...]:
        async with Transcoder().transcode(source(), output=rendition) as job:
            assert await anext(job.output)
            await asyncio.sleep(0.3)  # ffmpeg fills the pipe and blocks
            return job.pids

    for rendition in Rendition:
        closed.clear()
        pids = await asyncio.wait_for(stop_early(rendition), TIMEOUT)
        assert gone(pids)
        assert closed.is_set()


async def test_cancelling_a_job_leaves_nothing_behind() -> None:
    started = asyncio.Event()
    pids: tuple[int, ...] = ()

    async def endless() -> AsyncIterator[bytes]:
        yield wav_mono()[:40] + b"\xff\xff\xff\xff"  # a streaming writer's header: no length
        while True:
            yield bytes(8000)
            await asyncio.sleep(0.01)

    async def run() -> None:
        nonlocal pids
        async with Transcoder().transcode(endless(), output=Rendition.OPUS) as job:
            pids = job.pids
            started.set()
            async for _ in job.output:
                pass

    task = asyncio.create_task(run())
    await asyncio.wait_for(started.wait(), TIMEOUT)
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pids
    assert gone(pids)


# -- concurrency ---------------------------------------------------------------------------------


async def test_concurrency_limit_is_honoured() -> None:
    transcoder = Transcoder(concurrency=1)
    spans: list[tuple[float, float]] = []
    inside = 0
    most = 0

    async def job() -> None:
        nonlocal inside, most
        async with transcoder.transcode(chunks(wav_mono()), output=Rendition.OPUS) as j:
            inside += 1
            most = max(most, inside)
            begun = time.monotonic()
            async for _ in j.output:
                await asyncio.sleep(0.01)
            await j.facts()
            inside -= 1
            spans.append((begun, time.monotonic()))

    await asyncio.wait_for(asyncio.gather(job(), job(), job()), TIMEOUT)
    assert most == 1
    spans.sort()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


async def test_jobs_fed_by_one_tee_share_a_permit() -> None:
    """Under ``permit()`` the two jobs of one upload run together even with one permit; each
    taking its own would deadlock (the tee cannot feed one while the other waits)."""
    transcoder = Transcoder(concurrency=1)

    async def one(source: AsyncIterator[bytes], rendition: Rendition) -> AudioFacts:
        async with transcoder.transcode(source, output=rendition, silence=((1, 2),)) as job:
            async for _ in job.output:
                pass
            return await job.facts()

    async def upload() -> tuple[AudioFacts, AudioFacts]:
        async with transcoder.permit():
            first, second = tee(chunks(wav_mono()), 2)
            return await asyncio.gather(one(first, Rendition.FLAC), one(second, Rendition.OPUS))

    facts = await asyncio.wait_for(asyncio.gather(upload(), upload()), TIMEOUT)
    assert [f.duration for pair in facts for f in pair] == [3.0] * 4


async def test_a_job_exposes_its_processes_until_they_are_reaped() -> None:
    async with Transcoder().transcode(chunks(wav_mono()), output=Rendition.OPUS) as job:
        async for _ in job.output:
            pass
        await job.facts()
        assert len(job.pids) == 2  # decoder and encoder
        pids = job.pids
    assert gone(pids)


def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Transcoder(concurrency=-1)
