"""Disk full on the local store: the store lives on a 20 MiB file system (tmpfs, else a
loop-mounted file). An upload larger than the space answers ``507`` (or ``503``) with a
problem document, leaves no partial file and no item, and the archive keeps working: small
uploads succeed afterwards and existing items still decrypt."""

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import Service, call, clean_env, local_keys, put_call, query
from tests.ingest import media

SIZE_MIB = 20


def _mount(point: Path, work: Path) -> str:
    """Mount a SIZE_MIB file system at ``point``; return how, or raise with why not."""
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m,mode=0700",
                            "tmpfs", str(point)], capture_output=True, text=True, check=False)
    if tmpfs.returncode == 0:
        return "tmpfs"
    image = work / "disk.img"
    with image.open("wb") as f:
        f.truncate(SIZE_MIB * 1024 * 1024)
    mkfs = shutil.which("mkfs.ext4")
    if mkfs is None:
        raise OSError(f"tmpfs: {tmpfs.stderr.strip()}; no mkfs.ext4 for a loop file")
    subprocess.run([mkfs, "-q", "-F", str(image)], check=True, capture_output=True)
    loop = subprocess.run(["mount", "-o", "loop", str(image), str(point)],
                          capture_output=True, text=True, check=False)
    if loop.returncode != 0:
        raise OSError(f"tmpfs: {tmpfs.stderr.strip()}; loop: {loop.stderr.strip()}")
    return "loop"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    point = tmp_path / "disk"
    point.mkdir()
    try:
        _mount(point, tmp_path)
    except (OSError, subprocess.CalledProcessError) as exc:
        why = f"cannot mount a small file system here: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs the disk-full test to run; {why}")
        pytest.skip(why)
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


def test_an_upload_larger_than_the_disk_is_a_clean_507_and_the_archive_keeps_working(
        small_disk: Path, tmp_path: Path) -> None:
    store = small_disk / "store"
    data_dir = tmp_path / "var"  # the index and keyring stay on the roomy disk
    service = Service(clean_env(data_dir, ARCHIVE_STORE_URL=f"file://{store}"),
                      tmp_path / "serve.log")
    index_url = f"sqlite+aiosqlite:///{data_dir.resolve() / 'archive.db'}"
    ingest, complaints = service.token("ingest"), service.token("complaints")
    try:
        _, base = service.serve()
        before = media.wav(2.0)
        first = put_call(base, ingest, "call-before", before)
        assert first.status == 201, first
        free_before = shutil.disk_usage(small_disk).free

        big = media.wav(140.0, rate=48000, channels=2)  # ~27 MB, more than the disk holds
        assert len(big) > SIZE_MIB * 1024 * 1024
        full = put_call(base, ingest, "call-big", big, timeout=120)
        assert full.status in (507, 503) and full.is_problem, full

        # Nothing partial: no temporary file, no object, no item; the space is free again.
        assert list((store / "tmp").iterdir()) == []
        assert len(local_keys(store)) == 1  # the item stored before
        assert query(index_url, "SELECT status FROM items WHERE external_id = 'call-big'") == []
        assert shutil.disk_usage(small_disk).free >= free_before - 64 * 1024

        # The archive keeps working: a small upload succeeds, and both items decrypt.
        after = media.wav(3.0)
        second = put_call(base, ingest, "call-after", after)
        assert second.status == 201, second
        for answer, sent in ((first, before), (second, after)):
            played = call(base, complaints, "GET", f"/v1/items/{answer.json()['id']}/media")
            assert played.status == 200 and played.body == sent
        ready = call(base, "", "GET", "/readyz")
        assert ready.status == 200, ready
    finally:
        service.stop_all()
