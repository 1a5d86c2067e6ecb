"""A corpus of bad media pushed over HTTP to a real ``archive serve``: each is refused with a
problem body (415 not audio, 422 undecodable, 400 empty) and leaves nothing behind: no item row,
no object, no temporary file in the data directory."""

import io
import json
import sqlite3
import struct
import subprocess
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio_ffmpeg  # type: ignore[import-untyped]
import pytest

from tests.ingest import media
from tests.servers import archive_serve, stop

TENANT = "camden"
STATE_FILES = {"archive.db", "archive.db-wal", "archive.db-shm", "archive.db-journal",
               "keyring.json", "keyring.lock", "serve.log"}


@dataclass(frozen=True)
class Served:
    base: str
    token: str
    data: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("bad-media")
    proc, base, token = archive_serve(data, TENANT, stderr=data / "serve.log")
    try:
        yield Served(base, token, data)
    finally:
        stop(proc)


def _wav_header(data_size: int, *, rate: int = 8000, riff_size: int | None = None) -> bytes:
    """A 16-bit mono PCM WAV header declaring ``data_size`` bytes of samples."""
    riff = 36 + data_size if riff_size is None else riff_size
    return (b"RIFF" + struct.pack("<I", riff & 0xFFFFFFFF) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_size & 0xFFFFFFFF))


def truncated_header() -> bytes:
    return media.wav(1.0)[:30]  # cut inside the fmt chunk


def header_only_huge_size() -> bytes:
    """A header declaring 4 GiB of samples, and none of them."""
    return _wav_header(0xFFFFFFF0)


def declares_more_than_sent() -> bytes:
    """A header declaring 2 GiB of samples, then two seconds of them (a truncated upload)."""
    return _wav_header(0x7FFFFFF0) + media.wav(2.0)[44:]


def wrong_format_fields() -> bytes:
    """A WAV whose fmt chunk claims 0 channels and a 0 Hz rate, then some samples."""
    header = bytearray(_wav_header(16000))
    header[22:24] = struct.pack("<H", 0)  # channels
    header[24:28] = struct.pack("<I", 0)  # sample rate
    return bytes(header) + media.random_bytes(16000, seed=3)


def zip_bomb() -> bytes:
    """64 MiB of zeros deflated to a few tens of KiB, to be named ``call.wav``."""
    out = io.BytesIO()
    zeros = bytes(1024 * 1024)
    with (zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z,
          z.open("call.wav", "w") as member):
        for _ in range(64):
            member.write(zeros)
    return out.getvalue()


def random_bytes() -> bytes:
    return media.random_bytes(200_000, seed=9)


def silent_video() -> bytes:
    """A one-second Matroska video of the test pattern, with no audio track."""
    done = subprocess.run(
        [str(imageio_ffmpeg.get_ffmpeg_exe()), "-v", "error", "-f", "lavfi", "-i",
         "testsrc=size=64x48:rate=5:duration=1", "-c:v", "mpeg4", "-f", "matroska", "-"],
        check=True, capture_output=True, timeout=30)
    return done.stdout


def text_note() -> bytes:
    return media.not_audio()


CORPUS: dict[str, Callable[[], bytes]] = {
    "truncated-header": truncated_header,
    "header-only-huge-size": header_only_huge_size,
    "zero-channels-zero-rate": wrong_format_fields,
    "declares-more-than-sent": declares_more_than_sent,
    "zip-bomb-named-wav": zip_bomb,
    "random-bytes": random_bytes,
    "silent-video": silent_video,
    "text": text_note,
}


def _leftovers(data: Path) -> list[str]:
    """Every file under the data directory but the index, keyring and log."""
    return sorted(str(p.relative_to(data)) for p in data.rglob("*")
                  if p.is_file() and p.name not in STATE_FILES)


def _item_rows(data: Path) -> int:
    with sqlite3.connect(data / "archive.db") as db:
        count: int = db.execute("SELECT count(*) FROM items").fetchone()[0]
        return count


def _send(request: urllib.request.Request) -> tuple[int, str, dict[str, Any]]:
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.headers["Content-Type"], json.load(answer)
    except urllib.error.HTTPError as refused:
        body = refused.read()
        return refused.code, refused.headers["Content-Type"], json.loads(body) if body else {}


def _put(served: Served, body: bytes, external_id: str) -> tuple[int, str, dict[str, Any]]:
    meta = {"started_at": "2026-11-23T09:00:00Z"}
    return _send(urllib.request.Request(
        f"{served.base}/v1/recordings/{external_id}", data=body, method="PUT", headers={
            "Authorization": f"Bearer {served.token}", "X-Archive-Metadata": json.dumps(meta),
            "Content-Type": "audio/wav"}))


def _post(served: Served, body: bytes, external_id: str) -> tuple[int, str, dict[str, Any]]:
    boundary = uuid.uuid4().hex
    meta = json.dumps({"external_id": external_id, "started_at": "2026-11-23T09:00:00Z"})
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n"
            f"Content-Type: application/json\r\n\r\n{meta}\r\n--{boundary}\r\n"
            f"Content-Disposition: form-data; name=\"audio\"; filename=\"call.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
    return _send(urllib.request.Request(
        f"{served.base}/v1/recordings", data=form, method="POST", headers={
            "Authorization": f"Bearer {served.token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}"}))


def _assert_refused(status: int, content_type: str, problem: dict[str, Any],
                    allowed: set[int]) -> None:
    assert status in allowed, (status, problem)
    assert content_type.split(";", maxsplit=1)[0] == "application/problem+json"
    assert problem["status"] == status
    assert problem["title"] and problem["detail"]


@pytest.mark.parametrize("how", ["put", "post"])
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bad_media_is_refused_and_leaves_nothing(served: Served, name: str, how: str) -> None:
    before_rows, before_files = _item_rows(served.data), _leftovers(served.data)
    send = _put if how == "put" else _post
    status, content_type, problem = send(served, CORPUS[name](), f"{name}-{how}")
    _assert_refused(status, content_type, problem, {415, 422})
    assert _item_rows(served.data) == before_rows
    assert _leftovers(served.data) == before_files


@pytest.mark.parametrize("how", ["put", "post"])
def test_an_empty_body_is_refused_and_leaves_nothing(served: Served, how: str) -> None:
    before_rows, before_files = _item_rows(served.data), _leftovers(served.data)
    send = _put if how == "put" else _post
    status, content_type, problem = send(served, b"", f"empty-{how}")
    _assert_refused(status, content_type, problem, {400, 415, 422})
    assert _item_rows(served.data) == before_rows
    assert _leftovers(served.data) == before_files


def test_a_streaming_writers_unknown_size_is_not_a_bad_wav(served: Served) -> None:
    """The control for the corpus: a header whose data size is 0xFFFFFFFF (a streaming writer
    that did not know the length) with two seconds of samples is archived, at two seconds."""
    real = media.wav(2.0)
    status, _, item = _put(served, _wav_header(0xFFFFFFFF) + real[44:], "streamed")
    assert status == 201, item
    assert abs(item["duration"] - 2.0) < 0.1, item
