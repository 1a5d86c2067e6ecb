"""Key-encryption keys in AWS KMS: one KMS key per tenant KEK version.

The alias ``alias/{prefix}-{tenant}`` names the tenant's current key; the key's ARN is the KEK
id stored beside each wrapped data key. ``wrap`` encrypts through the alias, so every process
uses a rotation at once, and reads the ARN of the key that was used from KMS's reply.
``rotate`` creates a key and moves the alias; old keys stay enabled, so data keys they wrapped
still unwrap until the archive re-wraps them.

Every wrap carries the encryption context ``{"tenant": ..., "context": <item id>}``, which KMS
binds to the ciphertext (and logs in CloudTrail): a wrapped key copied to another item or tenant
does not decrypt. Each key is also tagged with its tenant, and ``unwrap`` refuses a key that is
not the tenant's before asking KMS to decrypt.
"""

import asyncio
import contextlib
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from storage.errors import KeyringError, UnknownKeyError
from storage.keyring import WrappedKey, check_tenant

TENANT_TAG = "archive-tenant"
# Days before KMS destroys a key we created but lost the race to alias (its minimum is 7).
_ORPHAN_DELETION_DAYS = 7
_PROVIDER_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError)
_WRONG_ITEM = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})
_KEY_GONE = frozenset({"NotFoundException"})
_KEY_UNUSABLE = frozenset({"DisabledException", "KMSInvalidStateException"})

Client = Any  # aiobotocore's clients are generated at run time and carry no types


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: Exception, action: str) -> KeyringError:
    """A KeyringError for a KMS failure, naming what failed but none of botocore's details."""
    if isinstance(exc, ClientError):
        code = _code(exc)
        if code in _WRONG_ITEM:
            return KeyringError("wrapped data key does not belong to this item")
        if code in _KEY_GONE:
            return UnknownKeyError(f"KMS has no such key ({action})")
        if code in _KEY_UNUSABLE:
            return KeyringError(f"the KMS key is disabled or pending deletion ({action})")
        return KeyringError(f"KMS refused to {action} ({code or 'unknown error'})")
    return KeyringError(f"KMS cannot be reached to {action} ({type(exc).__name__})")


class KmsKeyring:
    """Tenant KEKs as KMS keys behind per-tenant aliases; see the module docstring."""

    name = "kms"

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        region: str = "eu-west-2",
        alias_prefix: str = "archive",
        access_key: str | None = None,
        secret_key: str | None = None,
        retries: int = 3,
        timeout: float = 30.0,
        session: AioSession | None = None,
    ) -> None:
        self.alias_prefix = alias_prefix
        self._args: dict[str, Any] = {
            "region_name": region,
            "config": AioConfig(
                retries={"max_attempts": retries, "mode": "standard"},
                connect_timeout=min(timeout, 10.0),
                read_timeout=timeout,
            ),
        }
        if endpoint_url:
            self._args["endpoint_url"] = endpoint_url
        if access_key is not None:
            self._args["aws_access_key_id"] = access_key
            self._args["aws_secret_access_key"] = secret_key
        self._session = session or get_session()
        self._stack = contextlib.AsyncExitStack()
        self._client: Client | None = None
        self._owners: dict[str, str] = {}  # key ARN -> tenant, learnt from tags or our aliases

    async def open(self) -> "KmsKeyring":
        """Create the one KMS client this keyring uses until ``close``."""
        self._client = await self._stack.enter_async_context(
            self._session.create_client("kms", **self._args)
        )
        return self

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()

    @property
    def client(self) -> Client:
        if self._client is None:
            raise KeyringError("the KMS keyring is not open")
        return self._client

    def alias(self, tenant: str) -> str:
        return f"alias/{self.alias_prefix}-{check_tenant(tenant)}"

    # -- the protocol -----------------------------------------------------------------------

    async def current_kek_id(self, tenant: str) -> str:
        alias = self.alias(tenant)
        try:
            reply = await self.client.describe_key(KeyId=alias)
        except ClientError as exc:
            if _code(exc) not in _KEY_GONE:
                raise _translate(exc, "look up the tenant's key") from None
            return await self._create_first_key(tenant)
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, "look up the tenant's key") from None
        arn: str = reply["KeyMetadata"]["Arn"]
        self._owners[arn] = tenant
        return arn

    async def wrap(self, tenant: str, key: bytes, context: str) -> WrappedKey:
        alias = self.alias(tenant)
        try:
            try:
                reply = await self._encrypt(alias, tenant, key, context)
            except ClientError as exc:
                if _code(exc) not in _KEY_GONE:
                    raise
                # First use of this tenant: create its key, then wrap with it.
                current = await self.current_kek_id(tenant)
                reply = await self._encrypt(current, tenant, key, context)
        except ClientError as exc:
            raise _translate(exc, "wrap a data key") from None
        arn: str = reply["KeyId"]  # the ARN of the key behind the alias at that moment
        self._owners[arn] = tenant
        return WrappedKey(arn, bytes(reply["CiphertextBlob"]))

    async def unwrap(self, tenant: str, wrapped: WrappedKey, context: str) -> bytes:
        await self._check_owner(tenant, wrapped.kek_id)
        try:
            reply = await self.client.decrypt(
                CiphertextBlob=wrapped.blob,
                KeyId=wrapped.kek_id,
                EncryptionContext=_context(tenant, context),
            )
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, "unwrap a data key") from None
        if reply.get("KeyId") != wrapped.kek_id:
            raise KeyringError("wrapped data key does not belong to this item")
        return bytes(reply["Plaintext"])

    async def rotate(self, tenant: str) -> str:
        alias = self.alias(tenant)
        arn = await self._create_key(tenant)
        try:
            try:
                await self.client.update_alias(AliasName=alias, TargetKeyId=arn)
            except ClientError as exc:
                if _code(exc) not in _KEY_GONE:
                    raise
                await self.client.create_alias(AliasName=alias, TargetKeyId=arn)
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, "make the new key current") from None
        return arn

    async def ping(self) -> None:
        try:
            await self.client.list_aliases(Limit=1)
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, "list aliases") from None

    # -- helpers ----------------------------------------------------------------------------

    async def _encrypt(self, key_id: str, tenant: str, key: bytes, context: str) -> Any:
        """KMS Encrypt; ClientError passes through so the caller can react to a missing alias."""
        try:
            return await self.client.encrypt(
                KeyId=key_id, Plaintext=key, EncryptionContext=_context(tenant, context)
            )
        except ClientError:
            raise
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, "wrap a data key") from None

    async def _create_key(self, tenant: str) -> str:
        try:
            reply = await self.client.create_key(
                Description=f"archive key-encryption key of tenant {tenant}",
                KeyUsage="ENCRYPT_DECRYPT",
                KeySpec="SYMMETRIC_DEFAULT",
                Tags=[{"TagKey": TENANT_TAG, "TagValue": tenant}],
            )
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, "create a key") from None
        arn: str = reply["KeyMetadata"]["Arn"]
        self._owners[arn] = tenant
        return arn

    async def _create_first_key(self, tenant: str) -> str:
        """Create the tenant's first key and alias; if another process won, use its key."""
        alias = self.alias(tenant)
        arn = await self._create_key(tenant)
        try:
            await self.client.create_alias(AliasName=alias, TargetKeyId=arn)
        except ClientError as exc:
            if _code(exc) != "AlreadyExistsException":
                raise _translate(exc, "create the tenant's alias") from None
            await self._discard(arn)
            return await self.current_kek_id(tenant)
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, "create the tenant's alias") from None
        return arn

    async def _discard(self, arn: str) -> None:
        """Schedule deletion of a key that lost the race to the alias: it wrapped nothing."""
        self._owners.pop(arn, None)
        # Best effort: an unused orphan key costs money, not safety.
        with contextlib.suppress(*_PROVIDER_ERRORS):
            await self.client.schedule_key_deletion(
                KeyId=arn, PendingWindowInDays=_ORPHAN_DELETION_DAYS
            )

    async def _check_owner(self, tenant: str, kek_id: str) -> None:
        """Refuse a KEK id that is not one of the tenant's keys (read from the key's tag)."""
        check_tenant(tenant)
        if not kek_id.startswith("arn:") or ":key/" not in kek_id:
            raise UnknownKeyError(f"key {kek_id!r} is not a KMS key")
        owner = self._owners.get(kek_id)
        if owner is None:
            owner = await self._tagged_tenant(kek_id)
            if owner is not None:
                self._owners[kek_id] = owner
        if owner != tenant:
            raise UnknownKeyError(f"key {kek_id!r} is not a key of tenant {tenant!r}")

    async def _tagged_tenant(self, arn: str) -> str | None:
        try:
            paginator = self.client.get_paginator("list_resource_tags")
            async for page in paginator.paginate(KeyId=arn):
                for tag in page.get("Tags", []):
                    if tag["TagKey"] == TENANT_TAG:
                        return str(tag["TagValue"])
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, "read the key's tenant") from None
        return None


def _context(tenant: str, context: str) -> dict[str, str]:
    return {"tenant": tenant, "context": context}
