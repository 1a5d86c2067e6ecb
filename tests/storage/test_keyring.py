"""Key providers: the local keyring file and KMS (moto's KMS over HTTP) behave alike."""

import asyncio
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.crypto import new_data_key
from storage.errors import KeyringError, UnknownKeyError
from storage.keyring import KeyProvider, LocalKeyring, WrappedKey
from storage.kms import KmsKeyring
from tests.servers import free_port
from tests.storage.helpers import SESSION, TEST_KEY

ITEM = "0192f3a0-0000-7000-8000-000000000001"
OTHER_ITEM = "0192f3a0-0000-7000-8000-000000000002"


def kms(endpoint: str, prefix: str | None = None) -> KmsKeyring:
    """A KMS keyring whose aliases no other test shares (moto lives for the whole session)."""
    return KmsKeyring(
        endpoint_url=endpoint,
        alias_prefix=prefix or f"t{uuid.uuid4().hex[:12]}",
        access_key=TEST_KEY,
        secret_key=TEST_KEY,
        retries=1,
        session=SESSION,
    )


@pytest.fixture(params=["local", "kms"])
async def keyring(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyProvider]:
    if request.param == "local":
        opened: KeyProvider = await LocalKeyring(tmp_path / "keys.json").open()
    else:
        opened = await kms(request.getfixturevalue("moto_endpoint")).open()
    try:
        yield opened
    finally:
        await opened.close()


# -- behaviours every provider shares ---------------------------------------------------------


async def test_wrap_unwrap_round_trip(keyring: KeyProvider) -> None:
    dek = new_data_key()
    wrapped = await keyring.wrap("acme", dek, ITEM)
    assert wrapped.kek_id == await keyring.current_kek_id("acme")
    assert dek not in wrapped.blob
    assert await keyring.unwrap("acme", wrapped, ITEM) == dek


async def test_tenants_have_separate_keks(keyring: KeyProvider) -> None:
    assert await keyring.current_kek_id("acme") != await keyring.current_kek_id("globex")
    assert await keyring.current_kek_id("acme") == await keyring.current_kek_id("acme")


async def test_unwrap_for_another_tenant_fails(keyring: KeyProvider) -> None:
    wrapped = await keyring.wrap("acme", new_data_key(), ITEM)
    await keyring.current_kek_id("globex")
    with pytest.raises(KeyringError):
        await keyring.unwrap("globex", wrapped, ITEM)


async def test_unwrap_for_another_item_fails(keyring: KeyProvider) -> None:
    wrapped = await keyring.wrap("acme", new_data_key(), ITEM)
    with pytest.raises(KeyringError):
        await keyring.unwrap("acme", wrapped, OTHER_ITEM)


async def test_a_tampered_wrapped_key_fails(keyring: KeyProvider) -> None:
    wrapped = await keyring.wrap("acme", new_data_key(), ITEM)
    blob = bytearray(wrapped.blob)
    blob[len(blob) // 2] ^= 1
    with pytest.raises(KeyringError):
        await keyring.unwrap("acme", WrappedKey(wrapped.kek_id, bytes(blob)), ITEM)


async def test_a_wrapped_key_under_another_kek_id_fails(keyring: KeyProvider) -> None:
    old = await keyring.wrap("acme", new_data_key(), ITEM)
    await keyring.rotate("acme")
    new = await keyring.wrap("acme", new_data_key(), ITEM)
    with pytest.raises(KeyringError):
        await keyring.unwrap("acme", WrappedKey(new.kek_id, old.blob), ITEM)


async def test_rotation_keeps_old_keys_readable(keyring: KeyProvider) -> None:
    dek_old, dek_new = new_data_key(), new_data_key()
    old = await keyring.wrap("acme", dek_old, ITEM)
    kek_new = await keyring.rotate("acme")
    assert kek_new != old.kek_id
    assert await keyring.current_kek_id("acme") == kek_new
    new = await keyring.wrap("acme", dek_new, OTHER_ITEM)
    assert new.kek_id == kek_new
    assert await keyring.unwrap("acme", old, ITEM) == dek_old
    assert await keyring.unwrap("acme", new, OTHER_ITEM) == dek_new
    # Re-wrapping the old data key moves it to the new KEK without touching the object.
    rewrapped = await keyring.wrap("acme", dek_old, ITEM)
    assert rewrapped.kek_id == kek_new
    assert await keyring.unwrap("acme", rewrapped, ITEM) == dek_old


async def test_rotation_of_one_tenant_leaves_the_others(keyring: KeyProvider) -> None:
    globex = await keyring.current_kek_id("globex")
    await keyring.rotate("acme")
    assert await keyring.current_kek_id("globex") == globex


@pytest.mark.parametrize("tenant", ["", "Acme", "../x", "a" * 64])
async def test_invalid_tenant_is_refused(keyring: KeyProvider, tenant: str) -> None:
    with pytest.raises(KeyringError):
        await keyring.wrap(tenant, new_data_key(), ITEM)


async def test_ping(keyring: KeyProvider) -> None:
    await keyring.ping()


# -- the local keyring file -------------------------------------------------------------------


async def test_local_keyring_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keyring.json"
    keyring = await LocalKeyring(path).open()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    await keyring.wrap("acme", new_data_key(), ITEM)
    await keyring.rotate("acme")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert new_data_key() not in path.read_bytes()


async def test_local_rotation_adds_a_version(tmp_path: Path) -> None:
    keyring = await LocalKeyring(tmp_path / "keys.json").open()
    first = await keyring.current_kek_id("acme")
    second = await keyring.rotate("acme")
    assert (first, second) == ("local:acme:1", "local:acme:2")


async def test_another_instance_unwraps_after_a_rotation(tmp_path: Path) -> None:
    """A second instance (another process's view of the file) reads keys made after it opened."""
    path = tmp_path / "keys.json"
    first = await LocalKeyring(path).open()
    old = await first.wrap("acme", dek_old := new_data_key(), ITEM)
    second = await LocalKeyring(path).open()
    assert await second.unwrap("acme", old, ITEM) == dek_old

    await first.rotate("acme")
    new = await first.wrap("acme", dek_new := new_data_key(), ITEM)
    assert await second.unwrap("acme", new, ITEM) == dek_new
    assert await second.unwrap("acme", old, ITEM) == dek_old
    # A keyring opened after the rotation wraps with the new version.
    third = await LocalKeyring(path).open()
    assert await third.current_kek_id("acme") == new.kek_id


async def test_another_instance_wraps_with_a_rotated_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = await LocalKeyring(path).open()
    await first.current_kek_id("acme")
    second = await LocalKeyring(path).open()
    rotated = await first.rotate("acme")
    assert (await second.wrap("acme", new_data_key(), ITEM)).kek_id == rotated


async def test_concurrent_first_use_agrees_on_one_kek(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keyrings = [await LocalKeyring(path).open() for _ in range(4)]
    ids = await asyncio.gather(*(k.current_kek_id("acme") for k in keyrings))
    assert set(ids) == {"local:acme:1"}


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"\xff\xfe",
        b"",
        b"{}",
        b'{"tenants": {"acme": 1}}',
        b'{"tenants": {"acme": {"current": "2", "keys": {"1": "AAAA"}}}}',
        b'{"tenants": {"acme": {"current": "1", "keys": {"1": "not base64!"}}}}',
    ],
)
async def test_garbage_keyring_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    with pytest.raises(KeyringError):
        await LocalKeyring(path).open()


async def test_local_unwrap_of_a_kms_key_id_is_refused(tmp_path: Path) -> None:
    keyring = await LocalKeyring(tmp_path / "keys.json").open()
    wrapped = WrappedKey("arn:aws:kms:eu-west-2:123456789012:key/x", b"\x00" * 60)
    with pytest.raises(UnknownKeyError):
        await keyring.unwrap("acme", wrapped, ITEM)


# -- KMS --------------------------------------------------------------------------------------


async def test_kms_keys_are_tagged_and_aliased(moto_endpoint: str) -> None:
    keyring = await kms(moto_endpoint).open()
    try:
        arn = await keyring.current_kek_id("acme")
        assert arn.startswith("arn:aws:kms:eu-west-2:")
        alias = await keyring.client.describe_key(KeyId=keyring.alias("acme"))
        assert alias["KeyMetadata"]["Arn"] == arn
        tags = await keyring.client.list_resource_tags(KeyId=arn)
        assert {"TagKey": "archive-tenant", "TagValue": "acme"} in tags["Tags"]
        rotated = await keyring.rotate("acme")
        tags = await keyring.client.list_resource_tags(KeyId=rotated)
        assert {"TagKey": "archive-tenant", "TagValue": "acme"} in tags["Tags"]
    finally:
        await keyring.close()


async def test_kms_first_use_is_race_safe(moto_endpoint: str) -> None:
    """Several processes creating a tenant's first key at once end up using one key."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    keyrings = [await kms(moto_endpoint, prefix).open() for _ in range(4)]
    try:
        ids = await asyncio.gather(*(k.current_kek_id("acme") for k in keyrings))
        assert len(set(ids)) == 1
        wrapped = await asyncio.gather(*(k.wrap("acme", b"k" * 32, ITEM) for k in keyrings))
        assert {w.kek_id for w in wrapped} == set(ids)
    finally:
        for k in keyrings:
            await k.close()


async def test_kms_rotation_is_seen_by_other_processes(moto_endpoint: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    first, second = await kms(moto_endpoint, prefix).open(), await kms(moto_endpoint, prefix).open()
    try:
        old = await second.wrap("acme", dek := new_data_key(), ITEM)
        rotated = await first.rotate("acme")
        assert (await second.wrap("acme", new_data_key(), ITEM)).kek_id == rotated
        assert await second.current_kek_id("acme") == rotated
        assert await first.unwrap("acme", old, ITEM) == dek  # learns the owner from the tag
    finally:
        await first.close()
        await second.close()


async def test_kms_refuses_another_tenants_key_before_decrypting(moto_endpoint: str) -> None:
    """Even with the right encryption context, a key tagged for another tenant is refused."""
    keyring = await kms(moto_endpoint).open()
    try:
        globex_key = await keyring.current_kek_id("globex")
        blob = (
            await keyring.client.encrypt(
                KeyId=globex_key,
                Plaintext=b"k" * 32,
                EncryptionContext={"tenant": "acme", "context": ITEM},
            )
        )["CiphertextBlob"]
        with pytest.raises(UnknownKeyError):
            await keyring.unwrap("acme", WrappedKey(globex_key, blob), ITEM)
    finally:
        await keyring.close()


@pytest.mark.parametrize("kek_id", ["local:acme:1", "arn:aws:kms:eu-west-2:123456789012:key/nope"])
async def test_kms_unknown_key_is_refused(moto_endpoint: str, kek_id: str) -> None:
    keyring = await kms(moto_endpoint).open()
    try:
        with pytest.raises(UnknownKeyError):
            await keyring.unwrap("acme", WrappedKey(kek_id, b"\x00" * 100), ITEM)
    finally:
        await keyring.close()


async def test_kms_unreachable_is_a_keyring_error() -> None:
    keyring = await kms(f"http://127.0.0.1:{free_port()}").open()
    try:
        with pytest.raises(KeyringError, match="cannot be reached"):
            await keyring.wrap("acme", new_data_key(), ITEM)
        with pytest.raises(KeyringError, match="cannot be reached"):
            await keyring.ping()
    finally:
        await keyring.close()
