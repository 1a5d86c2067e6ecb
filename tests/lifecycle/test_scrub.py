"""The integrity scrub, on SQLite and PostgreSQL: real encrypted objects in a local store,
altered on disk the way bit rot or a careless operator would."""

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import col

from archive.errors import BadRequestError
from archive.models import Item
from archive.service import Archive, object_keys
from lifecycle.scrub import scrub
from tests.lifecycle.test_purge import add_tenant, cli_env, ingest, run_cli


async def test_a_clean_archive_scrubs_clean(archive: Archive) -> None:
    await add_tenant(archive)
    for n in range(3):
        await ingest(archive, f"call-{n}", days_ago=10, kinds=("original",))
    report = await scrub(archive, sample=10)  # more than there are: every readable item
    assert report.ok and report.problems == []
    assert (report.items, report.objects) == (3, 6)
    assert report.bytes == 3 * (5004 + 3000)
    assert "all intact" in str(report)
    assert (await scrub(archive, sample=1)).items == 1


async def test_flipped_byte_missing_object_and_wrong_hash_are_reported(
    archive: Archive, tmp_path: Path, db_url: str,
) -> None:
    await add_tenant(archive)
    intact = await ingest(archive, "intact", days_ago=10)
    flipped = await ingest(archive, "flipped", days_ago=10, kinds=("original",))
    deleted = await ingest(archive, "deleted", days_ago=10)
    rehashed = await ingest(archive, "rehashed", days_ago=10)
    objects = tmp_path / "store" / "objects"
    path = objects / object_keys(flipped)[1]  # the "original" object
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    (objects / object_keys(deleted)[0]).unlink()
    async with archive.db.session() as session:  # the index's hash no longer matches
        await session.exec(sa.update(Item).where(col(Item.id) == rehashed.id)
                           .values(sha256="0" * 64))
        await session.commit()

    report = await scrub(archive, sample=100)

    assert not report.ok and report.items == 4
    found = {(p.item_id, p.kind, p.what) for p in report.problems}
    assert found == {
        (flipped.id, "original", "authentication failed (altered, truncated or swapped)"),
        (deleted.id, "media", "missing from the store"),
        (rehashed.id, "media", "SHA-256 mismatch"),
    }
    text = str(report)
    assert "3 problem(s)" in text and f"item {flipped.id} (original)" in text
    assert str(intact.id) not in text

    done = run_cli(cli_env(db_url, tmp_path), "scrub", "--sample", "10")
    assert done.returncode == 1, done.stderr
    assert f"item {deleted.id} (media): missing from the store" in done.stdout


async def test_a_sample_below_one_is_refused(archive: Archive, tmp_path: Path,
                                             db_url: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        await scrub(archive, sample=0)
    assert refused.value.errors[0].field == "sample"
    done = run_cli(cli_env(db_url, tmp_path), "scrub", "--sample", "-3")
    assert done.returncode == 2 and "sample" in done.stderr
