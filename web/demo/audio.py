"""The demo's call audio: 8 kHz 16-bit telephony WAV, mono or stereo (agent left, caller right).

Two renderings of one timeline (who speaks when, the pauses, a spell on hold):

- ``Speech``: each line spoken by espeak-ng (``--stdout`` gives WAV bytes: no temporary
  files), every distinct line synthesised once and cached, the dialogue assembled here and
  resampled to 8 kHz by one ffmpeg per call;
- ``Tones``: when espeak-ng is missing (or ``--tones``), one ffmpeg per call makes speech-like
  tone bursts with ``aevalsrc``: each party a voice-like harmonic tone with a syllable rhythm,
  switched on only while that party "speaks" (``between(t,a,b)``), in its own channel.

Card details read out (``Line.card``) give the ``pci_redactions`` ranges the ingest silences.
"""

import asyncio
import io
import shutil
import wave
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import ffmpeg

from web.demo.content import SECONDS_PER_WORD, CallPlan, Line

RATE = 8000
LEAD_IN = 0.4  # seconds before the first line
PCI_MARGIN = 0.2  # seconds silenced either side of card details
_GLOBAL = ["-hide_banner", "-nostdin", "-loglevel", "error"]


class DemoAudioError(Exception):
    """espeak-ng or ffmpeg failed to make a demo recording."""


@dataclass(frozen=True)
class Recording:
    wav: bytes
    duration: float  # seconds
    channels: int
    pci: list[tuple[float, float]]  # seconds to silence (card details)


@dataclass(frozen=True)
class Placed:
    speaker: str
    start: float
    end: float
    card: bool


def layout(lines: Sequence[Line], lengths: Sequence[float], *, hold_after: int,
           hold: float) -> tuple[list[Placed], float]:
    """Place the lines one after another with short, varied pauses (and ``hold`` seconds of
    silence after line ``hold_after``); return them and the total length."""
    placed: list[Placed] = []
    t = LEAD_IN
    for n, (line, length) in enumerate(zip(lines, lengths, strict=True)):
        placed.append(Placed(line.speaker, t, t + length, line.card))
        t += length + 0.35 + (n * 37 % 7) / 10
        if n + 1 == hold_after and hold > 0:
            t += hold
    return placed, t + 0.3


def pci_ranges(placed: Sequence[Placed]) -> list[tuple[float, float]]:
    """One range over each run of consecutive card lines, with a margin either side."""
    ranges: list[tuple[float, float]] = []
    run: list[Placed] = []
    for p in [*placed, None]:
        if p is not None and p.card:
            run.append(p)
            continue
        if run:
            ranges.append((max(0.0, run[0].start - PCI_MARGIN), run[-1].end + PCI_MARGIN))
            run = []
    return ranges


def hold_point(plan: CallPlan) -> int:
    """After which line the caller is put on hold: the end of the opening."""
    return min(3, len(plan.lines) - 1)


def to_wav(pcm: bytes, channels: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return out.getvalue()


async def _run(args: list[str], data: bytes = b"") -> bytes:
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(data)
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise DemoAudioError(f"{args[0]} exited with {proc.returncode}: {tail[0]}")
    return out


class Renderer(Protocol):
    name: str

    async def render(self, plan: CallPlan) -> Recording:
        """The call's recording."""


# -- spoken ------------------------------------------------------------------------------------

def parse_wav(data: bytes) -> tuple[int, bytes]:
    """espeak-ng's mono 16-bit WAV: its sample rate and samples. Its sizes are placeholders
    (it writes to a pipe), so the samples are whatever follows the data chunk's header."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DemoAudioError("espeak-ng did not write a WAV")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if kind == b"fmt ":
            rate = int.from_bytes(data[pos + 12:pos + 16], "little")
        elif kind == b"data":
            body = data[pos + 8:]
            return rate, body[:len(body) - len(body) % 2]
        pos += 8 + size + size % 2
    raise DemoAudioError("espeak-ng's WAV has no data")


class Speech:
    """Lines spoken by espeak-ng, cached by voice and text."""

    name = "espeak-ng"

    def __init__(self, espeak: str, ffmpeg_exe: str, jobs: int) -> None:
        self.espeak = espeak
        self.ffmpeg = ffmpeg_exe
        self._jobs = asyncio.Semaphore(jobs)
        self._lines: dict[tuple[str, str], asyncio.Task[tuple[int, bytes]]] = {}

    async def _speak(self, voice: str, text: str) -> tuple[int, bytes]:
        async with self._jobs:
            return parse_wav(await _run([self.espeak, "--stdout", "-v", voice, "--", text]))

    def line(self, voice: str, text: str) -> "asyncio.Task[tuple[int, bytes]]":
        key = (voice, text)
        if key not in self._lines:
            self._lines[key] = asyncio.ensure_future(self._speak(voice, text))
        return self._lines[key]

    async def render(self, plan: CallPlan) -> Recording:
        voices = {"agent": plan.agent.voice, "caller": plan.script.caller_voice}
        spoken = await asyncio.gather(*(self.line(voices[ln.speaker], ln.text)
                                        for ln in plan.lines))
        rate = spoken[0][0]
        placed, total = layout(plan.lines, [len(pcm) / 2 / rate for _, pcm in spoken],
                               hold_after=hold_point(plan), hold=plan.hold)
        frames = int(total * rate)
        tracks = {"agent": bytearray(2 * frames), "caller": bytearray(2 * frames)}
        if not plan.stereo:
            tracks["caller"] = tracks["agent"]  # one track: they take turns, never overlap
        for p, (_, pcm) in zip(placed, spoken, strict=True):
            at = 2 * int(p.start * rate)
            tracks[p.speaker][at:at + len(pcm)] = pcm
        channels = 2 if plan.stereo else 1
        if plan.stereo:
            left, right = array("h", bytes(tracks["agent"])), array("h", bytes(tracks["caller"]))
            both = array("h", bytes(4 * frames))
            both[0::2], both[1::2] = left, right
            raw = both.tobytes()
        else:
            raw = bytes(tracks["agent"])
        args = (ffmpeg.input("pipe:0", f="s16le", ar=rate, ac=channels)
                .output("pipe:1", f="s16le", ar=RATE, ac=channels).get_args())
        async with self._jobs:
            pcm = await _run([self.ffmpeg, *_GLOBAL, *args], raw)
        return Recording(to_wav(pcm, channels), len(pcm) / 2 / channels / RATE, channels,
                         pci_ranges(placed))


# -- tones -------------------------------------------------------------------------------------

def _voice(pitch: float, syllables: float, gates: list[str]) -> str:
    """A harmonic tone at ``pitch`` with a syllable rhythm, on only inside ``gates``."""
    if not gates:
        return "0"
    tone = (f"0.22*(sin(2*PI*{pitch:g}*t)+0.5*sin(4*PI*{pitch:g}*t)"
            f"+0.3*sin(6*PI*{pitch:g}*t))*(0.55+0.45*sin(2*PI*{syllables:g}*t))")
    return f"{tone}*({'+'.join(gates)})"


class Tones:
    """Speech-like tone bursts made by ffmpeg's ``aevalsrc``."""

    name = "ffmpeg tones"

    def __init__(self, ffmpeg_exe: str, jobs: int) -> None:
        self.ffmpeg = ffmpeg_exe
        self._jobs = asyncio.Semaphore(jobs)

    async def render(self, plan: CallPlan) -> Recording:
        lengths = [len(ln.text.split()) * SECONDS_PER_WORD + 0.2 for ln in plan.lines]
        placed, total = layout(plan.lines, lengths, hold_after=hold_point(plan),
                               hold=plan.hold)
        gates: dict[str, list[str]] = {"agent": [], "caller": []}
        for p in placed:
            gates[p.speaker].append(f"between(t,{p.start:.2f},{p.end:.2f})")
        agent = _voice(plan.agent.pitch, 3.7, gates["agent"])
        caller = _voice(plan.script.caller_pitch, 4.3, gates["caller"])
        exprs = f"{agent}|{caller}" if plan.stereo else f"{agent}+{caller}"
        channels = 2 if plan.stereo else 1
        source = f"aevalsrc=exprs='{exprs}':s={RATE}:d={total:.3f}"
        args = ffmpeg.input(source, f="lavfi").output("pipe:1", f="s16le", ac=channels).get_args()
        async with self._jobs:
            pcm = await _run([self.ffmpeg, *_GLOBAL, *args])
        return Recording(to_wav(pcm, channels), len(pcm) / 2 / channels / RATE, channels,
                         pci_ranges(placed))


def choose_renderer(ffmpeg_exe: str, *, tones: bool, jobs: int) -> Renderer:
    """Spoken audio when espeak-ng is on PATH (and tones were not asked for), else tones."""
    espeak = None if tones else shutil.which("espeak-ng")
    if espeak:
        return Speech(espeak, ffmpeg_exe, jobs)
    return Tones(ffmpeg_exe, jobs)
