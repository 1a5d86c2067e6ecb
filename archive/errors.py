"""One hierarchy for every error the archive reports. The web layer maps each to an
``application/problem+json`` answer with its ``status`` and ``title``; the docstring of each class
is its default message."""

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class FieldError:
    """One bad input field: where it is (``field``, dotted for nested) and what is wrong."""

    field: str
    message: str


class ArchiveError(Exception):
    """The archive could not complete the request."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(
        self, detail: str | None = None, *, errors: list[FieldError] | None = None
    ) -> None:
        self.detail = detail or (self.__doc__ or "").strip()
        self.errors = errors or []
        super().__init__(self.detail)


class BadRequestError(ArchiveError):
    """The request is not valid."""

    status = 400
    title = "Bad request"


class UnauthorizedError(ArchiveError):
    """A valid bearer token is required."""

    status = 401
    title = "Unauthorized"


class ForbiddenError(ArchiveError):
    """This token's role may not do that."""

    status = 403
    title = "Forbidden"


class NotFoundError(ArchiveError):
    """No such resource."""

    status = 404
    title = "Not found"


class ConflictError(ArchiveError):
    """The request conflicts with what the archive holds."""

    status = 409
    title = "Conflict"


class PayloadTooLargeError(ArchiveError):
    """The upload is larger than the configured limit."""

    status = 413
    title = "Payload too large"


class UnsupportedMediaError(ArchiveError):
    """The upload is not a supported media type."""

    status = 415
    title = "Unsupported media type"


class UnprocessableError(ArchiveError):
    """The upload could not be processed."""

    status = 422
    title = "Unprocessable content"


class UnavailableError(ArchiveError):
    """A dependency (the index, the object store or the keyring) is unavailable; try again."""

    status = 503
    title = "Service unavailable"


class InsufficientStorageError(ArchiveError):
    """The object store has no space left."""

    status = 507
    title = "Insufficient storage"


class IntegrityFailureError(ArchiveError):
    """A stored object failed its integrity check; it was not served."""

    status = 500
    title = "Integrity failure"


class ConfigurationError(ArchiveError):
    """The settings are not valid."""
