"""The service's Ed25519 signing key: it signs the manifest of every evidence bundle.

The private key is a PEM (PKCS#8) file, mode 0600, created on first use. Creation is atomic: the
key is written to a private temporary file and hard-linked into place, which fails if the file
exists, so two processes starting at once both end up with the one key that won.

Recipients check a bundle with the public key (raw 32 bytes, shown base64). Its key id is the
first 16 hex digits of the SHA-256 of the raw public key: short enough to read out on a phone
call that confirms a key obtained independently.
"""

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from archive.errors import ConfigurationError
from archive.settings import Settings

ALGORITHM = "Ed25519"
PUBLIC_KEY_SIZE = 32


def key_path(settings: Settings) -> Path:
    """Where the signing key lives: ``signing_key_file``, else ``DATA_DIR/signing-key.pem``."""
    return settings.signing_key_file or settings.data_dir / "signing-key.pem"


def key_id(public_key: bytes) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    """The private key, and what recipients are told of its public half."""

    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode("ascii")

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)


def verify(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``data``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_public_key(text: str) -> bytes:
    """A raw public key from base64 of its 32 bytes, or from a PEM ``PUBLIC KEY`` block."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise ValueError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM public key is not an Ed25519 key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 (expected the 32-byte Ed25519 public key)") from None
    if len(raw) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, not {len(raw)}")
    return raw


def load_or_create(path: Path) -> Signer:
    """Load the key at ``path``, creating it (atomically, mode 0600) if there is none."""
    if not path.exists():
        _create(path)
    try:
        data = path.read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"signing key {path} cannot be read: {type(exc).__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"signing key {path} is not an Ed25519 private key")
    if path.stat().st_mode & 0o077:
        raise ConfigurationError(
            f"signing key {path} is readable by others; chmod 600 it")
    return Signer(key)


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: use its key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
