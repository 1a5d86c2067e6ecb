"""``archive verify-bundle`` as a recipient runs it: a real process on a real bundle."""

import subprocess
import zipfile
from pathlib import Path

import pytest

from archive import signing
from archive.exports import create_export
from archive.service import Archive
from archive.signing import Signer
from tests.archive.test_bundles import (
    CLERK,
    add_tenant,
    flip,
    rewrite,
    store_call,
    store_chat,
    write_bundle,
)
from tests.ingest import media
from tests.test_cli import ARCHIVE


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ARCHIVE, "verify-bundle", *args], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
async def made(archive: Archive, tmp_path: Path) -> tuple[Path, Signer]:
    signer = signing.load_or_create(tmp_path / "signing-key.pem")
    await add_tenant(archive, "camden")
    call = await store_call(archive, "camden", media.wav(0.5))
    chat = await store_chat(archive, "camden")
    export = await create_export(archive, tenant="camden", actor=CLERK, kind="evidence",
                                 purpose="tribunal", item_ids=[call.id, chat.id])
    return await write_bundle(archive, export, signer, tmp_path / "bundle.zip"), signer


async def test_an_intact_bundle_verifies(made: tuple[Path, Signer], tmp_path: Path) -> None:
    path, signer = made
    done = verify(str(path), "--public-key", signer.public_key_b64)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == f"bundle verified: 8 files, signed by key {signer.key_id}\n"
    assert done.stderr == ""
    key_file = tmp_path / "archive.pub"
    key_file.write_text(signer.public_key_b64 + "\n")
    assert verify(str(path), "--public-key", str(key_file)).returncode == 0
    # Without a key of its own the check still runs, with a warning about what it proves.
    done = verify(str(path))
    assert done.returncode == 0 and "verified" in done.stdout
    assert "warning" in done.stderr and "--public-key" in done.stderr


async def test_a_changed_bundle_fails_and_says_why(
    made: tuple[Path, Signer], tmp_path: Path
) -> None:
    path, signer = made
    bad = rewrite(path, tmp_path / "bad.zip",
                  change={"items/1-call_1/recording.wav": flip},
                  drop={"items/2-chat-1/transcript.txt"}, add={"extra.txt": b"hi"})
    done = verify(str(bad), "--public-key", signer.public_key_b64)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "bundle NOT verified: 3 problem(s)",
        "  - items/1-call_1/recording.wav does not match its SHA-256 in the manifest: "
        "it was changed",
        "  - items/2-chat-1/transcript.txt is listed in the manifest but missing",
        "  - extra.txt is not listed in the manifest: it was added"]
    other = signing.load_or_create(tmp_path / "other.pem")
    done = verify(str(path), "--public-key", other.public_key_b64)
    assert done.returncode == 1 and f"not signed by key {other.key_id}" in done.stdout
    with zipfile.ZipFile(path) as zf:
        assert "manifest.json" in zf.namelist()
    done = verify(str(path), "--public-key", "not-a-key")
    assert done.returncode == 2 and "--public-key" in done.stderr
    done = verify(str(tmp_path / "missing.zip"), "--public-key", signer.public_key_b64)
    assert done.returncode == 1 and "not a readable ZIP" in done.stdout
