"""Errors raised by storage backends, the cipher and the keyrings.

Backends translate provider errors (botocore's ``NoSuchKey``, ``OSError``...) into these at the
boundary, so callers never see a provider's exception type. The archive translates these in turn
into its own hierarchy.
"""


class StorageError(Exception):
    """The object store failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class BlobNotFoundError(StorageError):
    """No object is stored under that key."""


class InvalidKeyError(StorageError):
    """An object key must be a relative path of letters, digits, '-', '_', '.' and '/'."""


class StoreUnavailableError(StorageError):
    """The object store cannot be reached."""


class StoreFullError(StorageError):
    """The object store has no space left."""


class LegalHoldError(StorageError):
    """The object is under an object-lock legal hold and cannot be deleted."""


class IntegrityError(StorageError):
    """The stored object failed authentication: it was altered, truncated or belongs elsewhere."""


class KeyringError(StorageError):
    """The keyring cannot wrap or unwrap a data key."""


class UnknownKeyError(KeyringError):
    """The key-encryption key named by a wrapped data key is not in the keyring."""
