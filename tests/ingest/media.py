"""Real audio (and non-audio) bytes for tests, made with the real ffmpeg and sox.

Pure functions, no fixtures. Tones come from ffmpeg's ``sine`` source at -18 dBFS: 440 Hz on the
left (or only) channel and 660 Hz on the right, so the two parties of a stereo call can be told
apart. Files are written to a private temporary folder when the muxer needs to seek back (WAV,
MP3 and FLAC headers, an MP4 index) so they look like what a telephony system writes; that is
fine in tests (the service itself never writes media to disk). GSM needs ``sox`` (Debian: sox).
"""

import io
import random
import re
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import NamedTuple

from ingest.audio import find_ffmpeg

LEFT_HZ = 440.0
RIGHT_HZ = 660.0


def ffmpeg(*args: str, data: bytes = b"") -> bytes:
    """Run ffmpeg with ``args`` (``data`` on stdin); return stdout; raise with stderr on error."""
    done = subprocess.run([find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", *args],
                          input=data, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    return done.stdout


def _tone_args(seconds: float, rate: int, channels: int) -> list[str]:
    """Input arguments for a ``channels``-channel tone (the first two tones differ)."""
    if not seconds > 0:
        raise ValueError("a tone needs a positive duration (0 would make ffmpeg's sine endless)")
    def sine(hz: float) -> list[str]:
        return ["-f", "lavfi", "-i", f"sine=frequency={hz}:sample_rate={rate}:duration={seconds}"]

    if channels == 1:
        return sine(LEFT_HZ)
    args: list[str] = []
    for ch in range(channels):
        args += sine((LEFT_HZ, RIGHT_HZ)[ch] if ch < 2 else LEFT_HZ * (ch + 1))
    inputs = "".join(f"[{i}:a]" for i in range(channels))
    layout = {2: "stereo"}.get(channels, f"{channels}c")
    return [*args, "-filter_complex", f"{inputs}join=inputs={channels}:channel_layout={layout}"]


def _to_file(suffix: str, *args: str) -> bytes:
    """Run ffmpeg writing a (seekable) file; return its bytes."""
    with tempfile.TemporaryDirectory(prefix="media-") as folder:
        out = Path(folder) / f"out{suffix}"
        ffmpeg(*args, "-y", str(out))
        return out.read_bytes()


def pcm(seconds: float, rate: int = 8000, channels: int = 1) -> bytes:
    """Raw signed 16-bit little-endian samples of the test tone."""
    return ffmpeg(*_tone_args(seconds, rate, channels), "-c:a", "pcm_s16le", "-f", "s16le", "-")


def wav(seconds: float, rate: int = 8000, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV with a correct header (as a recorder that closes its file writes it)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm(seconds, rate, channels))
    return buffer.getvalue()


def mp3(seconds: float, rate: int = 8000, channels: int = 1, bitrate: str = "32k") -> bytes:
    """An MP3 with LAME's Info header (frame count), as a file encoder writes it."""
    return _to_file(".mp3", *_tone_args(seconds, rate, channels),
                    "-c:a", "libmp3lame", "-b:a", bitrate)


def ogg_opus(seconds: float, rate: int = 8000, channels: int = 1) -> bytes:
    """Ogg/Opus from a ``rate`` Hz tone."""
    return ffmpeg(*_tone_args(seconds, rate, channels), "-c:a", "libopus", "-b:a", "24k",
                  "-f", "ogg", "-")


def flac(seconds: float, rate: int = 8000, channels: int = 1) -> bytes:
    """FLAC with a complete STREAMINFO (sample count), as a file encoder writes it."""
    return _to_file(".flac", *_tone_args(seconds, rate, channels), "-c:a", "flac")


def gsm(seconds: float) -> bytes:
    """Raw GSM 06.10 (8 kHz mono, 33-byte frames), made by sox as telephony systems do."""
    sox = shutil.which("sox")
    if sox is None:
        raise RuntimeError("these tests need sox (Debian package: sox)")
    done = subprocess.run([sox, "-t", "wav", "-", "-t", "gsm", "-r", "8000", "-c", "1", "-"],
                          input=wav(seconds), capture_output=True, check=True)
    return done.stdout


def m4a(seconds: float, rate: int = 8000) -> bytes:
    """AAC in MP4 with the index first (``+faststart``), the only MP4 a pipe can carry."""
    return _to_file(".m4a", *_tone_args(seconds, rate, 1), "-c:a", "aac",
                    "-movflags", "+faststart")


def video(seconds: float = 1.0) -> bytes:
    """A tiny Matroska video (test pattern) that also has an audio track."""
    return ffmpeg("-f", "lavfi", "-i", f"testsrc=size=64x48:rate=5:duration={seconds}",
                  *_tone_args(seconds, 8000, 1)[:4], "-c:v", "mpeg4", "-c:a", "pcm_s16le",
                  "-shortest", "-f", "matroska", "-")


def mp3_with_cover(seconds: float) -> bytes:
    """An MP3 with a JPEG cover picture (an attached picture, which is still audio)."""
    return _to_file(".mp3", *_tone_args(seconds, 8000, 1), "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=1:duration=1", "-map", "0:a", "-map", "1:v",
                    "-c:a", "libmp3lame", "-b:a", "32k", "-c:v", "mjpeg",
                    "-disposition:v", "attached_pic", "-id3v2_version", "3")


def truncated(data: bytes, keep: float) -> bytes:
    """The first part of ``data``: ``keep`` bytes if an int, else that fraction of it."""
    count = keep if isinstance(keep, int) else int(len(data) * keep)
    return data[:count]


def not_audio() -> bytes:
    """Plain text (a call note), not audio."""
    return ("Call note: customer asked about council tax band; agent explained the appeal "
            "process and sent a link.\n" * 40).encode()


def random_bytes(n: int, seed: int = 0) -> bytes:
    """``n`` reproducible random bytes."""
    return random.Random(seed).randbytes(n)


def decode(data: bytes, *, rate: int | None = None) -> bytes:
    """Decoded 16-bit little-endian PCM of ``data`` (at ``rate`` if given, else its own)."""
    args = ["-i", "pipe:0", "-map", "0:a:0"]
    if rate:
        args += ["-ar", str(rate)]
    return ffmpeg(*args, "-c:a", "pcm_s16le", "-f", "s16le", "-", data=data)


def duration(data: bytes) -> float:
    """Seconds of audio ffmpeg decodes from ``data``."""
    out = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-nostdin", "-i", "pipe:0", "-map", "0:a:0",
         "-af", "asetpts=N/SR/TB", "-f", "null", "-", "-progress", "pipe:1", "-nostats"],
        input=data, capture_output=True, check=True).stdout.decode()
    return int(re.findall(r"out_time_us=(\d+)", out)[-1]) / 1e6


class Level(NamedTuple):
    """Loudness of a stretch of audio in dBFS; ``-inf`` is digital silence."""

    mean_db: float
    max_db: float


def level_db(data: bytes, start: float, end: float) -> Level:
    """RMS and peak level of ``data`` between ``start`` and ``end`` seconds (all channels)."""
    done = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-nostdin", "-i", "pipe:0", "-map", "0:a:0", "-af",
         f"asetpts=N/SR/TB,atrim=start={start}:end={end},"
         "astats=measure_perchannel=none:measure_overall=Peak_level+RMS_level",
         "-f", "null", "-"],
        input=data, capture_output=True, check=True)
    text = done.stderr.decode()
    peak = re.findall(r"Peak level dB: (\S+)", text)
    rms = re.findall(r"RMS level dB: (\S+)", text)
    if not peak or not rms:
        raise RuntimeError(f"no level measured: {text[-1000:]}")
    return Level(float(rms[-1]), float(peak[-1]))
