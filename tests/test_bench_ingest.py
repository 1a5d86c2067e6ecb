"""``bench.ingest`` and its reference server keep working and keep measuring what they claim.

No timing is asserted here (figures belong to ``docs/benchmarks.md``): these tests check that a
short run prints every row and ratio, and that ``bench.minimal_server`` really does the byte
work it stands for, since a reference that skipped the hash or the cipher would flatter the
archive's figures.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage import crypto
from tests.ingest import media
from tests.servers import free_port, stop, wait_http

ROOT = Path(__file__).resolve().parent.parent


def _put(base: str, name: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{base}/r/{name}", data=body, method="PUT")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, answer.read()


Start = Callable[[str], tuple[str, Path]]


@pytest.fixture
def minimal_server(tmp_path: Path) -> Iterator[Start]:
    started: list[subprocess.Popen[bytes]] = []

    def start(work: str) -> tuple[str, Path]:
        folder = tmp_path / work
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.minimal_server", "--port", str(port), "--work", work,
             str(folder)], cwd=ROOT, stdout=subprocess.DEVNULL)
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", proc=proc)
        return base, folder / "objects" / "minimal"

    yield start
    for proc in started:
        stop(proc)
        assert proc.returncode == 0, "the minimal server did not stop cleanly on SIGTERM"


def test_minimal_server_sealed_hashes_and_encrypts_what_it_stores(minimal_server: Start) -> None:
    base, objects = minimal_server("sealed")
    body = media.wav(3.0)
    status, answer = _put(base, "call-1", body)
    assert status == 201
    assert json.loads(answer) == {"sha256": hashlib.sha256(body).hexdigest()}
    stored = (objects / "call-1").read_bytes()
    assert len(stored) == crypto.ciphertext_size(len(body))
    assert body[4096:8192] not in stored  # audio, not sealed, would be found as it is


def test_minimal_server_none_stores_the_body_as_received(minimal_server: Start) -> None:
    base, objects = minimal_server("none")
    body = media.wav(3.0)
    status, _ = _put(base, "call-1", body)
    assert status == 201
    assert (objects / "call-1").read_bytes() == body


def test_a_short_bench_run_prints_every_row_and_ratio(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--count", "2", "--minutes", "0.2",
         "--repeat", "1"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TMPDIR": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for row in ("bare put", "ffmpeg CLI -> opus", "HTTP only, minimal", "HTTP+hash+AES, minimal",
                "HTTP, keep original", "HTTP, keep opus"):
        match = re.search(rf"^  {re.escape(row)}\s+([\d.]+) recordings/s\s+([\d.]+) MB/s$", out,
                          re.MULTILINE)
        assert match, f"no row {row!r} in:\n{out}"
        assert float(match[1]) > 0
    assert re.search(r"^where the originals' time goes: HTTP alone reaches [\d.]+x the bare "
                     r"put; with SHA-256 and AES-GCM [\d.]+x; .* takes that to [\d.]+x$", out,
                     re.MULTILINE), out
    assert re.search(r"^originals: [\d.]+x the bare put's throughput \(target >= 0\.70\): "
                     r"(meets|MISSES) it$", out, re.MULTILINE), out
    assert re.search(r"^opus: [\d.]+x ffmpeg's own transcode rate", out, re.MULTILINE), out
    assert list(tmp_path.iterdir()) == [], "the bench left files behind"
