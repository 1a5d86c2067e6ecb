"""A blob store in an S3 bucket (AWS S3, MinIO, or moto in tests), through aiobotocore.

One client serves the store's whole lifetime; ``open`` creates it inside an ``AsyncExitStack``
and ``close`` closes the stack. Provider errors are translated here, at the boundary, into
``storage.errors``, so callers never see botocore's types.

Writes are all-or-nothing. An object smaller than the multipart threshold is sent with one
``PutObject`` (S3 makes it visible only when the request completes); a larger one goes up as a
multipart upload that is completed only after its last part, and aborted on any failure or
cancellation, so no incomplete upload lingers and no partial object is ever visible.

When the bucket has Object Lock enabled, legal holds are enforced by S3 itself: a held version
cannot be deleted even by someone who bypasses the archive. Such buckets are always versioned,
so ``delete`` removes every version and delete marker of the key.
"""

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from storage.base import BlobInfo, check_key, check_prefix
from storage.errors import (
    BlobNotFoundError,
    LegalHoldError,
    StorageError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3's floor for every part but the last
DEFAULT_PART_SIZE = 8 * MIB
READ_CHUNK = 256 * 1024

_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchVersion"})
_NO_BUCKET = frozenset({"NoSuchBucket"})
_UNAVAILABLE = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"}
)
_NO_LOCK_CONFIG = "ObjectLockConfigurationNotFoundError"

# Any client type would do: aiobotocore's clients are generated at run time and carry no types.
Client = Any


def _error_code(exc: ClientError) -> tuple[str, int]:
    response: Mapping[str, Any] = exc.response
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _translate(exc: Exception, bucket: str, key: str = "") -> StorageError:
    """Map a botocore/aiohttp error to the storage error callers handle."""
    where = f"{key!r} in bucket {bucket!r}" if key else f"bucket {bucket!r}"
    if isinstance(exc, ClientError):
        code, status = _error_code(exc)
        if code in _NO_BUCKET:
            return StoreUnavailableError(f"bucket {bucket!r} does not exist")
        if code in _NOT_FOUND or (status == 404 and key):
            return BlobNotFoundError(f"no object {key!r}")
        if code in _UNAVAILABLE or status >= 500:
            return StoreUnavailableError(f"S3 is unavailable ({code or status}) for {where}")
        return StorageError(f"S3 refused the request ({code or status}) for {where}")
    # Connection refused, DNS, timeouts, a body cut short, missing credentials.
    return StoreUnavailableError(f"S3 cannot be reached for {where}: {type(exc).__name__}")


_PROVIDER_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError)


async def _despite_cancellation(aw: Awaitable[None]) -> None:
    """Run cleanup to its end even if the caller is cancelled meanwhile, then re-raise that."""
    task = asyncio.ensure_future(aw)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def make_config(retries: int = 3, timeout: float = 60.0, pool: int = 10) -> AioConfig:
    """Client settings: path-style addressing (MinIO needs it), bounded retries and timeouts."""
    return AioConfig(
        s3={"addressing_style": "path"},
        retries={"max_attempts": retries, "mode": "standard"},
        connect_timeout=min(timeout, 10.0),
        read_timeout=timeout,
        max_pool_connections=pool,
    )


def _client_args(
    region: str,
    endpoint_url: str | None,
    access_key: str | None,
    secret_key: str | None,
    config: AioConfig,
) -> dict[str, Any]:
    args: dict[str, Any] = {"region_name": region, "config": config}
    if endpoint_url:
        args["endpoint_url"] = endpoint_url
    if access_key is not None:
        # Otherwise botocore's default chain: environment, profile, instance role.
        args["aws_access_key_id"] = access_key
        args["aws_secret_access_key"] = secret_key
    return args


class S3BlobStore:
    """Objects in one bucket, optionally under a key prefix; see the module docstring."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "eu-west-2",
        access_key: str | None = None,
        secret_key: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        retries: int = 3,
        timeout: float = 60.0,
        session: AioSession | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part size must be at least {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.prefix = check_prefix(prefix).rstrip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.part_size = part_size
        self._args = _client_args(
            region, endpoint_url, access_key, secret_key, make_config(retries, timeout)
        )
        # A shared session saves loading botocore's service models for every client (~0.1 s).
        self._session = session or get_session()
        self._stack = contextlib.AsyncExitStack()
        self._client: Client | None = None
        self._lock_enabled = False
        self._versioned = False

    # -- lifetime ---------------------------------------------------------------------------

    async def open(self) -> "S3BlobStore":
        """Create the client, check the bucket exists and learn whether it has Object Lock."""
        try:
            self._client = await self._stack.enter_async_context(
                self._session.create_client("s3", **self._args)
            )
            await self._check_bucket()
            self._lock_enabled = await self._detect_object_lock()
            self._versioned = self._lock_enabled or await self._detect_versioning()
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()

    @property
    def client(self) -> Client:
        if self._client is None:
            raise StoreUnavailableError("the S3 store is not open")
        return self._client

    async def _check_bucket(self) -> None:
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code, status = _error_code(exc)
            if status == 404 or code in _NO_BUCKET:
                raise StoreUnavailableError(f"bucket {self.bucket!r} does not exist") from None
            raise _translate(exc, self.bucket) from exc
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, self.bucket) from exc

    async def _detect_object_lock(self) -> bool:
        try:
            conf = await self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            code, status = _error_code(exc)
            if code == _NO_LOCK_CONFIG or status in {400, 403, 404, 501}:
                return False  # no lock, or a server that does not implement it
            raise _translate(exc, self.bucket) from exc
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, self.bucket) from exc
        enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        return bool(enabled == "Enabled")

    async def _detect_versioning(self) -> bool:
        try:
            conf = await self.client.get_bucket_versioning(Bucket=self.bucket)
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, self.bucket) from exc
        # A suspended bucket still keeps the versions made while it was enabled.
        return conf.get("Status") in {"Enabled", "Suspended"}

    @property
    def supports_legal_hold(self) -> bool:
        return self._lock_enabled

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    # -- writes -----------------------------------------------------------------------------

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        # Only S3's errors are translated: an error raised by the source (a client that went
        # away, say) reaches the caller as it was, even a TimeoutError or an aiohttp error.
        full = self._full(key)
        reader = _PartReader(chunks, self.part_size)
        first, size = await reader.next_part()
        if await reader.exhausted():
            await self._call(key, self.client.put_object(Bucket=self.bucket, Key=full, Body=first))
            return size
        reader.unread(first, size)
        del first  # the reader owns it now, so it is freed once sent
        return await self._put_multipart(key, full, reader)

    async def _call(self, key: str, request: Awaitable[T]) -> T:
        """Await one S3 request, translating its failure into a storage error."""
        try:
            return await request
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, self.bucket, key) from exc

    async def _put_multipart(self, key: str, full: str, reader: "_PartReader") -> int:
        """Upload the stream as parts; abort the upload unless all of it lands."""
        created = await self._call(
            key,
            self.client.create_multipart_upload(
                Bucket=self.bucket, Key=full, ChecksumAlgorithm="CRC32"
            ),
        )
        upload_id: str = created["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            total = 0
            body, size = await reader.next_part()
            while size:
                request = self._upload_part(full, upload_id, len(parts) + 1, body)
                parts.append(await self._call(key, request))
                total += size
                del body, request  # let the sent part go before the next one is read
                body, size = await reader.next_part()
            await self._call(
                key,
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                ),
            )
        except BaseException:
            await _despite_cancellation(self._abort(full, upload_id))
            raise
        return total

    async def _upload_part(
        self, full: str, upload_id: str, number: int, body: io.BytesIO
    ) -> dict[str, Any]:
        reply = await self.client.upload_part(
            Bucket=self.bucket,
            Key=full,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm="CRC32",
        )
        part = {"PartNumber": number, "ETag": reply["ETag"]}
        if "ChecksumCRC32" in reply:
            part["ChecksumCRC32"] = reply["ChecksumCRC32"]
        return part

    async def _abort(self, full: str, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id
            )
        except _PROVIDER_ERRORS as exc:
            # The original error matters more; a bucket lifecycle rule reaps what is left.
            log.warning(
                "could not abort multipart upload",
                extra={"bucket": self.bucket, "upload_id": upload_id, "error": repr(exc)},
            )

    # -- reads ------------------------------------------------------------------------------

    async def get(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        full = self._full(key)
        if start < 0 or (end is not None and end <= start):
            # Nothing to read, but a missing object is still an error, as on every backend.
            if await self.stat(key) is None:
                raise BlobNotFoundError(f"no object {key!r}")
            return
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            reply = await self.client.get_object(**args)
        except ClientError as exc:
            code, status = _error_code(exc)
            if status == 416 or code == "InvalidRange":
                return  # the range starts at or after the end of the object
            if code in _NOT_FOUND:
                raise BlobNotFoundError(f"no object {key!r}") from None
            raise _translate(exc, self.bucket, key) from exc
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, self.bucket, key) from exc
        try:
            async with reply["Body"] as body:
                async for chunk in body.iter_chunks(READ_CHUNK):
                    yield chunk
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, self.bucket, key) from exc

    async def stat(self, key: str) -> BlobInfo | None:
        full = self._full(key)
        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            code, status = _error_code(exc)
            if status == 404 or code in _NOT_FOUND:
                return None
            raise _translate(exc, self.bucket, key) from exc
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, self.bucket, key) from exc
        modified: datetime = head["LastModified"]
        held = head.get("ObjectLockLegalHoldStatus") == "ON"
        return BlobInfo(key, int(head["ContentLength"]), modified, held)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        check_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for obj in page.get("Contents", []):
                    yield BlobInfo(
                        self._relative(obj["Key"]), int(obj["Size"]), obj["LastModified"]
                    )
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, self.bucket) from exc

    # -- deletion and holds -----------------------------------------------------------------

    async def delete(self, key: str) -> None:
        full = self._full(key)
        try:
            if not self._versioned:
                await self.client.delete_object(Bucket=self.bucket, Key=full)
                return
            versions = await self._versions(full)
            if self._lock_enabled:
                await self._refuse_if_held(key, full, versions)
            for version_id in versions:
                await self._delete_version(key, full, version_id)
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, self.bucket, key) from exc

    async def _versions(self, full: str) -> tuple[str, ...]:
        """Every version id and delete marker id stored for exactly ``full``."""
        ids: tuple[str, ...] = ()
        paginator = self.client.get_paginator("list_object_versions")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            entries = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            # The prefix also matches longer keys.
            ids += tuple(e["VersionId"] for e in entries if e["Key"] == full)
        return ids

    async def _refuse_if_held(self, key: str, full: str, versions: tuple[str, ...]) -> None:
        """Check every version before deleting any, so a held object is left whole."""
        for version_id in versions:
            try:
                reply = await self.client.get_object_legal_hold(
                    Bucket=self.bucket, Key=full, VersionId=version_id
                )
            except ClientError as exc:
                code, status = _error_code(exc)
                # Delete markers and versions never held have no legal hold to report.
                if code in {"NoSuchObjectLockConfiguration", "MethodNotAllowed"} or status in {
                    404,
                    405,
                }:
                    continue
                raise
            if reply.get("LegalHold", {}).get("Status") == "ON":
                raise LegalHoldError(f"object {key!r} is under a legal hold")

    async def _delete_version(self, key: str, full: str, version_id: str) -> None:
        try:
            await self.client.delete_object(Bucket=self.bucket, Key=full, VersionId=version_id)
        except ClientError as exc:
            code, _ = _error_code(exc)
            if self._lock_enabled and code == "AccessDenied":
                # S3 refuses to delete a version under a legal hold or an unexpired retention.
                raise LegalHoldError(
                    f"object {key!r} is under a legal hold or retention period"
                ) from None
            raise

    async def set_legal_hold(self, key: str, on: bool) -> None:
        full = self._full(key)
        if not self._lock_enabled:
            return  # the index still records the hold; the bucket just cannot enforce it
        try:
            await self.client.put_object_legal_hold(
                Bucket=self.bucket, Key=full, LegalHold={"Status": "ON" if on else "OFF"}
            )
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, self.bucket, key) from exc

    async def ping(self) -> None:
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except _PROVIDER_ERRORS as exc:
            error = _translate(exc, self.bucket)
            if not isinstance(error, StoreUnavailableError):
                error = StoreUnavailableError(str(error))
            raise error from exc


class _PartReader:
    """Cuts a byte stream into parts of exactly ``size`` bytes (the last may be shorter).

    Each part is built in an ``io.BytesIO`` that is then the request body: aiohttp sends it in
    chunks, so the part is never copied whole (a bytes body would be copied again into the
    socket's send buffer, tripling the memory of each upload). A part never grows past
    ``size``: the tail of a chunk that does not fit waits for the next part.
    """

    def __init__(self, chunks: AsyncIterator[bytes], size: int) -> None:
        self._chunks = chunks
        self._size = size
        self._rest = b""
        self._ended = False
        self._unread: tuple[io.BytesIO, int] | None = None

    def unread(self, part: io.BytesIO, size: int) -> None:
        """Give a part back, to be returned again by the next ``next_part``."""
        self._unread = (part, size)

    async def _next_chunk(self) -> bytes | None:
        if self._rest:
            chunk, self._rest = self._rest, b""
            return chunk
        while not self._ended:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._ended = True
                break
            if chunk:
                return chunk
        return None

    async def next_part(self) -> tuple[io.BytesIO, int]:
        """The next part, positioned at its start, and its size (0 once the stream ended)."""
        if self._unread is not None:
            part, self._unread = self._unread, None
            return part
        body = io.BytesIO()
        filled = 0
        while filled < self._size:
            chunk = await self._next_chunk()
            if chunk is None:
                break
            room = self._size - filled
            if len(chunk) > room:
                chunk, self._rest = chunk[:room], chunk[room:]
            filled += body.write(chunk)
        body.seek(0)
        return body, filled

    async def exhausted(self) -> bool:
        """Whether no byte follows; reads ahead one chunk (kept for the next part) to know."""
        chunk = await self._next_chunk()
        if chunk is None:
            return True
        self._rest = chunk
        return False


async def create_bucket(
    bucket: str,
    *,
    endpoint_url: str | None = None,
    region: str = "eu-west-2",
    access_key: str | None = None,
    secret_key: str | None = None,
    object_lock: bool = False,
    versioning: bool = False,
    retries: int = 3,
    session: AioSession | None = None,
) -> None:
    """Create ``bucket`` (an existing bucket of ours is fine), optionally with Object Lock.

    Object Lock can only be enabled when a bucket is created, and it turns versioning on;
    ``versioning`` alone keeps old versions without enforcing holds.
    """
    args = _client_args(region, endpoint_url, access_key, secret_key, make_config(retries))
    create: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":  # S3 rejects a location constraint naming its default region
        create["CreateBucketConfiguration"] = {"LocationConstraint": region}
    if object_lock:
        create["ObjectLockEnabledForBucket"] = True
    async with (session or get_session()).create_client("s3", **args) as client:
        try:
            try:
                await client.create_bucket(**create)
            except ClientError as exc:
                if _error_code(exc)[0] != "BucketAlreadyOwnedByYou":
                    raise
            if versioning and not object_lock:
                await client.put_bucket_versioning(
                    Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
                )
        except _PROVIDER_ERRORS as exc:
            raise _translate(exc, bucket) from exc
