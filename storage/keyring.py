"""Key-encryption keys (KEKs): per-tenant, versioned; they wrap and unwrap per-object data keys.

A wrapped data key lives in the item's index row, never beside the object. Destroying that row's
wrapped key destroys every copy of the object (crypto-shredding). Rotation adds a KEK version;
data keys are then re-wrapped to it without touching the objects.

The wrap is bound to its tenant and context (the item id), so a wrapped key copied to another
item's row does not unwrap there.
"""

import asyncio
import base64
import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.errors import KeyringError, UnknownKeyError

_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_NONCE_SIZE = 12


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key sealed by a KEK, with the id of the KEK version that sealed it."""

    kek_id: str
    blob: bytes


@runtime_checkable
class KeyProvider(Protocol):
    """Wraps and unwraps data keys with a tenant's current KEK."""

    name: str

    async def wrap(self, tenant: str, key: bytes, context: str) -> WrappedKey:
        """Seal ``key`` with the tenant's current KEK, bound to ``context``."""
        ...

    async def unwrap(self, tenant: str, wrapped: WrappedKey, context: str) -> bytes:
        """Open a wrapped key; ``KeyringError`` when it does not belong to tenant and context."""
        ...

    async def current_kek_id(self, tenant: str) -> str:
        """The id of the KEK version that ``wrap`` uses now (created on first use)."""
        ...

    async def rotate(self, tenant: str) -> str:
        """Make a new KEK version current for the tenant; return its id."""
        ...

    async def ping(self) -> None:
        """Raise ``KeyringError`` unless keys can be wrapped now."""
        ...

    async def close(self) -> None:
        """Release clients."""
        ...


def _aad(tenant: str, kek_id: str, context: str) -> bytes:
    return json.dumps([tenant, kek_id, context]).encode()


def check_tenant(tenant: str) -> str:
    if not _TENANT.match(tenant):
        raise KeyringError(f"invalid tenant id {tenant!r}")
    return tenant


class LocalKeyring:
    """KEKs kept in a JSON file (mode 0600), generated on first use.

    File access is blocking but small and rare, so it runs in a thread.

    The file is the only copy of the KEKs: losing it loses every object, so operators back it up
    apart from the objects (docs/operations.md). Several processes may share the file; changes
    take an exclusive ``flock`` and replace the file atomically, and an unknown version makes a
    reader reload before it gives up.
    """

    name = "local"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._keys: dict[str, dict[str, bytes]] = {}
        self._current: dict[str, str] = {}
        self._mtime_ns = 0

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load(self) -> None:
        try:
            self._mtime_ns = self._path.stat().st_mtime_ns
            raw = json.loads(self._path.read_text())
        except FileNotFoundError:
            self._mtime_ns = 0
            raw = {"format": 1, "tenants": {}}
        except (OSError, ValueError) as exc:
            raise KeyringError(f"keyring file {self._path} is unreadable: {exc}") from None
        try:
            keys = {
                t: {str(v): base64.b64decode(k, validate=True) for v, k in entry["keys"].items()}
                for t, entry in raw["tenants"].items()
            }
            current = {t: str(entry["current"]) for t, entry in raw["tenants"].items()}
        except (KeyError, TypeError, AttributeError, ValueError):
            raise KeyringError(f"keyring file {self._path} is not a keyring") from None
        if any(current[t] not in keys[t] for t in current):
            raise KeyringError(f"keyring file {self._path} names a missing current key")
        self._keys, self._current = keys, current

    def _reload_if_changed(self) -> None:
        """Pick up versions another process added (a rotation) before choosing a key to wrap."""
        try:
            mtime = self._path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = 0
        if mtime != self._mtime_ns:
            self._load()

    def _save(self) -> None:
        doc = {
            "format": 1,
            "tenants": {
                t: {
                    "current": self._current[t],
                    "keys": {v: base64.b64encode(k).decode() for v, k in keys.items()},
                }
                for t, keys in sorted(self._keys.items())
            },
        }
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self._path)

    def _add_version(self, tenant: str, only_if_missing: bool) -> str:
        with self._locked():
            self._load()  # another process may have added versions since
            if only_if_missing and tenant in self._current:
                return self._kek_id(tenant, self._current[tenant])
            versions = self._keys.setdefault(tenant, {})
            version = str(max((int(v) for v in versions), default=0) + 1)
            versions[version] = AESGCM.generate_key(bit_length=256)
            self._current[tenant] = version
            self._save()
            return self._kek_id(tenant, version)

    @staticmethod
    def _kek_id(tenant: str, version: str) -> str:
        return f"local:{tenant}:{version}"

    def _kek(self, tenant: str, kek_id: str) -> bytes:
        scheme, _, rest = kek_id.partition(":")
        owner, _, version = rest.rpartition(":")
        if scheme != "local" or owner != tenant:
            raise UnknownKeyError(f"key {kek_id!r} is not a key of tenant {tenant!r}")
        for attempt in range(2):
            key = self._keys.get(tenant, {}).get(version)
            if key is not None:
                return key
            if attempt == 0:
                self._load()  # rotated by another process
        raise UnknownKeyError(f"key {kek_id!r} is not in the keyring")

    async def open(self) -> "LocalKeyring":
        await asyncio.to_thread(self._open_sync)
        return self

    def _open_sync(self) -> None:
        with self._locked():
            self._load()
            if not self._path.exists():
                self._save()
        self._path.chmod(0o600)

    async def current_kek_id(self, tenant: str) -> str:
        check_tenant(tenant)
        await asyncio.to_thread(self._reload_if_changed)
        if tenant in self._current:
            return self._kek_id(tenant, self._current[tenant])
        return await asyncio.to_thread(self._add_version, tenant, True)

    async def wrap(self, tenant: str, key: bytes, context: str) -> WrappedKey:
        kek_id = await self.current_kek_id(tenant)
        nonce = os.urandom(_NONCE_SIZE)
        sealed = AESGCM(self._kek(tenant, kek_id)).encrypt(
            nonce, key, _aad(tenant, kek_id, context)
        )
        return WrappedKey(kek_id, nonce + sealed)

    async def unwrap(self, tenant: str, wrapped: WrappedKey, context: str) -> bytes:
        kek = self._kek(tenant, wrapped.kek_id)
        nonce, sealed = wrapped.blob[:_NONCE_SIZE], wrapped.blob[_NONCE_SIZE:]
        try:
            return AESGCM(kek).decrypt(nonce, sealed, _aad(tenant, wrapped.kek_id, context))
        except InvalidTag:
            raise KeyringError("wrapped data key does not belong to this item") from None

    async def rotate(self, tenant: str) -> str:
        check_tenant(tenant)
        return await asyncio.to_thread(self._add_version, tenant, False)

    async def ping(self) -> None:
        if not await asyncio.to_thread(os.access, self._path, os.R_OK):
            raise KeyringError(f"keyring file {self._path} is not readable")

    async def close(self) -> None:
        return None
