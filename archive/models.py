"""The index: SQLModel tables. Schema changes go through Alembic migrations (archive/migrations),
which a test compares with these models on SQLite and PostgreSQL.

Personal data lives only in ``items`` (and is stripped from a row when its item is destroyed);
``destructions``, ``audit_events`` details and ``tokens`` hold none.
"""

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

# Deterministic constraint names, so that migrations name them alike on every database.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database.

    SQLite has no time zones and hands back naive values; this stores UTC and always returns an
    aware datetime, and refuses naive input rather than guessing its zone.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the index; use timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Channel(enum.StrEnum):
    CALL = "call"
    CHAT = "chat"


class ItemStatus(enum.StrEnum):
    PENDING = "pending"  # row written, object not yet complete: invisible to readers
    ACTIVE = "active"
    PURGED = "purged"  # destroyed at the end of its retention window
    ERASED = "erased"  # destroyed on a data subject's request
    # Identifying content destroyed on request; what is left identifies no one: a chat keeps a
    # redacted transcript (readable), a call keeps only non-identifying metadata (no audio).
    ANONYMISED = "anonymised"


class Role(enum.StrEnum):
    INGEST = "ingest"
    COMPLAINTS = "complaints"
    QUALITY = "quality"
    ADMIN = "admin"
    AUDITOR = "auditor"
    PRIVACY = "privacy"  # the data protection team: subject access, correction, erasure


def _ts(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


class Tenant(SQLModel, table=True):
    """A council (or other body) whose data is kept apart from every other's."""

    __tablename__ = "tenants"

    id: str = Field(primary_key=True, max_length=63)
    name: str = Field(max_length=200)
    created_at: datetime = _ts()
    # What a call recording is kept as: "original" (the bytes received: lossless evidence),
    # "opus" (an Ogg/Opus rendition, ~16x smaller) or "both".
    media_policy: str = Field(default="original", max_length=16,
                              sa_column_kwargs={"server_default": "original"})


# Fields of an item that identify a person; destruction sets each to None.
PERSONAL_FIELDS = (
    "caller_number", "called_number", "customer_name", "customer_name_key", "customer_email",
    "customer_postcode", "tags", "extra",
)


class Item(SQLModel, table=True):
    """One call recording or one webchat transcript, and what is known about it."""

    __tablename__ = "items"
    __table_args__ = (
        sa.UniqueConstraint("tenant", "channel", "external_id", name="uq_items_external"),
        # Searches: each filter with the tenant first and newest first. Every search has a
        # status; with the id too, a search pages through this index alone (archive/search.py).
        sa.Index("ix_items_tenant_status_started", "tenant", "status", "started_at", "id"),
        sa.Index("ix_items_caller", "tenant", "caller_number", "started_at"),
        sa.Index("ix_items_called", "tenant", "called_number", "started_at"),
        sa.Index("ix_items_email", "tenant", "customer_email", "started_at"),
        sa.Index("ix_items_postcode", "tenant", "customer_postcode", "started_at"),
        sa.Index("ix_items_name", "tenant", "customer_name_key", "started_at"),
        sa.Index("ix_items_agent", "tenant", "agent_id", "started_at"),
        # Lifecycle: what has expired, per tenant (previews) and across tenants (the worker).
        sa.Index("ix_items_tenant_expiry", "tenant", "status", "retain_until"),
        sa.Index("ix_items_expiry", "status", "retain_until"),
        # Held items (about 1% of an archive), newest first.
        sa.Index("ix_items_held", "tenant", "status", "started_at", "id",
                 postgresql_where=sa.text("held"), sqlite_where=sa.text("held")),
        # Objects under the store's legal hold, for the reconciler (few, like held items).
        sa.Index("ix_items_object_lock", "id", postgresql_where=sa.text("object_lock"),
                 sqlite_where=sa.text("object_lock")),
    )

    id: uuid.UUID = Field(primary_key=True)
    tenant: str = Field(foreign_key="tenants.id", max_length=63)
    channel: str = Field(max_length=8)
    external_id: str = Field(max_length=200)
    status: str = Field(max_length=16)
    started_at: datetime = _ts()
    ended_at: datetime | None = _ts(default=None)
    duration: float | None = None  # seconds
    direction: str | None = Field(default=None, max_length=16)
    caller_number: str | None = Field(default=None, max_length=32)  # E.164
    called_number: str | None = Field(default=None, max_length=32)  # E.164
    agent_id: str | None = Field(default=None, max_length=100)
    agent_extension: str | None = Field(default=None, max_length=32)
    service: str | None = Field(default=None, max_length=100)
    queue: str | None = Field(default=None, max_length=100)
    customer_name: str | None = Field(default=None, max_length=200)
    customer_name_key: str | None = Field(default=None, max_length=200)  # casefolded, for search
    customer_email: str | None = Field(default=None, max_length=320)  # lower-cased
    customer_postcode: str | None = Field(default=None, max_length=8)  # upper-case, no spaces
    special_category: bool = False
    # none_as_null: None is SQL NULL (destruction strips these), not the JSON value null.
    tags: list[str] | None = Field(default=None, sa_type=sa.JSON(none_as_null=True))
    extra: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON(none_as_null=True))
    # The stored object
    object_key: str | None = Field(default=None, max_length=300)
    media_type: str | None = Field(default=None, max_length=100)
    plain_size: int | None = Field(default=None, sa_type=sa.BigInteger)
    stored_size: int | None = Field(default=None, sa_type=sa.BigInteger)
    sha256: str | None = Field(default=None, max_length=64)  # of the plaintext stored
    media: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)  # codec, rate, ...
    # Further objects of the item by kind ("original": the evidence kept beside a rendition),
    # each {"object_key", "media_type", "size", "stored_size", "sha256"}.
    objects: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    # What the producer sent (hash and size of the bytes received), and the hash of that plus
    # the normalised metadata: a retry with the same content_hash is the same upload.
    source_sha256: str | None = Field(default=None, max_length=64)
    source_size: int | None = Field(default=None, sa_type=sa.BigInteger)
    content_hash: str | None = Field(default=None, max_length=64)
    wrapped_key: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    kek_id: str | None = Field(default=None, max_length=300)
    # Retention
    retain_until: datetime | None = _ts(default=None)
    retention_basis: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    # Whether the store holds the object-level legal hold (S3 Object Lock) on the item's
    # objects, as far as the index knows; the reconciler repairs drift from the bucket.
    object_lock: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # Under at least one active legal hold: kept in step with hold_items and holds by every
    # change of either (archive.search.refresh_held), so that a search for held items reads
    # a small partial index instead of probing hold_items for every item. The hold tables stay
    # the authority for destruction, which re-checks them.
    held: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Hold(SQLModel, table=True):
    """A legal hold: while active, none of its items may be destroyed."""

    __tablename__ = "holds"
    __table_args__ = (
        sa.Index("ix_holds_case", "tenant", "case_ref"),
        sa.Index("ix_holds_status", "tenant", "status"),
    )

    id: uuid.UUID = Field(primary_key=True)
    tenant: str = Field(foreign_key="tenants.id", max_length=63)
    case_ref: str = Field(max_length=100)
    reason: str = Field(max_length=2000)
    # The search filters of a live query hold as asked, or SQL NULL for a hold on listed items.
    query: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON(none_as_null=True))
    status: str = Field(default="active", max_length=16)
    placed_by: str = Field(max_length=100)
    placed_at: datetime = _ts()
    released_by: str | None = Field(default=None, max_length=100)
    released_at: datetime | None = _ts(default=None)
    release_reason: str | None = Field(default=None, max_length=2000)


class HoldItem(SQLModel, table=True):
    """Membership of an item in a hold; an item may sit under several holds."""

    __tablename__ = "hold_items"
    __table_args__ = (sa.Index("ix_hold_items_item", "item_id"),)

    hold_id: uuid.UUID = Field(foreign_key="holds.id", primary_key=True)
    item_id: uuid.UUID = Field(foreign_key="items.id", primary_key=True)
    added_by: str = Field(max_length=100)
    added_at: datetime = _ts()


class Policy(SQLModel, table=True):
    """One version of a tenant's retention window for a channel. The highest version is in
    force; earlier ones stay as the record of what applied when."""

    __tablename__ = "policies"
    __table_args__ = (
        sa.UniqueConstraint("tenant", "channel", "version", name="uq_policies_version"),
    )

    id: uuid.UUID = Field(primary_key=True)
    tenant: str = Field(foreign_key="tenants.id", max_length=63)
    channel: str = Field(max_length=8)
    version: int
    days: int
    source: str = Field(max_length=16)  # "api", "cli" or "settings" (the settings file)
    set_by: str = Field(max_length=100)
    set_at: datetime = _ts()
    reason: str | None = Field(default=None, max_length=2000)


class ObjectDeletion(SQLModel, table=True):
    """An object whose item no longer needs it (destroyed, replaced): queued in the same
    transaction that let it go, deleted from the store after, and dequeued once deleted, so
    a crash or an unavailable store never leaves it behind (the sweeper retries)."""

    __tablename__ = "object_deletions"

    key: str = Field(primary_key=True, max_length=300)
    tenant: str = Field(max_length=63)
    queued_at: datetime = _ts()


class AuditEvent(SQLModel, table=True):
    """One entry of a tenant's append-only, hash-chained audit log."""

    __tablename__ = "audit_events"
    __table_args__ = (
        sa.UniqueConstraint("tenant", "seq", name="uq_audit_seq"),
        sa.Index("ix_audit_item", "tenant", "item_id"),
        sa.Index("ix_audit_at", "tenant", "at"),
    )

    # SQLite autoincrements only an INTEGER primary key.
    id: int | None = Field(default=None, primary_key=True,
                           sa_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"))
    tenant: str = Field(max_length=63)
    seq: int = Field(sa_type=sa.BigInteger)
    at: datetime = _ts()
    actor: str = Field(max_length=100)
    role: str = Field(max_length=16)
    action: str = Field(max_length=50)
    item_id: uuid.UUID | None = None
    detail: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """The last event of each tenant's chain. Appends lock this row, so they serialise per
    tenant on every database, and verification can tell when the tail was cut off."""

    __tablename__ = "audit_heads"

    tenant: str = Field(primary_key=True, max_length=63)
    seq: int = Field(default=0, sa_type=sa.BigInteger)
    hash: str = Field(max_length=64)


class Destruction(SQLModel, table=True):
    """Proof that an item was destroyed, and under what authority. No personal data."""

    __tablename__ = "destructions"
    __table_args__ = (sa.Index("ix_destructions_tenant", "tenant", "destroyed_at"),)

    id: uuid.UUID = Field(primary_key=True)
    item_id: uuid.UUID = Field(unique=True)
    tenant: str = Field(max_length=63)
    channel: str = Field(max_length=8)
    reason: str = Field(max_length=32)  # retention, erasure, anonymisation
    retention_basis: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    retain_until: datetime | None = _ts(default=None)
    destroyed_at: datetime = _ts()
    stored_sha256: str | None = Field(default=None, max_length=64)
    actor: str = Field(max_length=100)


class Token(SQLModel, table=True):
    """An API token. Only the SHA-256 of its secret is kept; the secret is shown once."""

    __tablename__ = "tokens"

    id: uuid.UUID = Field(primary_key=True)
    tenant: str = Field(foreign_key="tenants.id", max_length=63)
    role: str = Field(max_length=16)
    name: str = Field(default="", max_length=100)
    secret_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts()
    expires_at: datetime | None = _ts(default=None)
    revoked_at: datetime | None = _ts(default=None)


class User(SQLModel, table=True):
    """A person who signs in to the staff pages with a username and password (``archive users
    create``). Only a salted scrypt hash of the password is kept."""

    __tablename__ = "users"

    id: uuid.UUID = Field(primary_key=True)
    tenant: str = Field(foreign_key="tenants.id", max_length=63)
    username: str = Field(max_length=100, unique=True)
    role: str = Field(max_length=16)
    password_hash: str = Field(max_length=300)
    created_at: datetime = _ts()
    disabled_at: datetime | None = _ts(default=None)


class WebSession(SQLModel, table=True):
    """A signed-in browser: the cookie's secret is kept only as its SHA-256. Ends at sign-out,
    at expiry, or when its token is revoked or its user disabled."""

    __tablename__ = "web_sessions"

    id: str = Field(primary_key=True, max_length=64)  # SHA-256 of the cookie's secret
    kind: str = Field(max_length=8)  # "token" or "user"
    principal_id: uuid.UUID  # the token's or the user's id
    tenant: str = Field(max_length=63)
    role: str = Field(max_length=16)
    csrf: str = Field(max_length=64)  # the forms' CSRF token for this session
    created_at: datetime = _ts()
    expires_at: datetime = _ts()


class ItemVersion(SQLModel, table=True):
    """A rectification: the item's correctable metadata as it was before a change, kept for
    the record. Holds personal data, so destroying the item deletes its versions."""

    __tablename__ = "item_versions"
    __table_args__ = (sa.UniqueConstraint("item_id", "version", name="uq_item_versions"),)

    id: uuid.UUID = Field(primary_key=True)
    item_id: uuid.UUID = Field(foreign_key="items.id")
    tenant: str = Field(max_length=63)
    version: int  # 1: as ingested; the item itself is the latest version
    fields: dict[str, Any] = Field(sa_type=sa.JSON)  # the metadata of this version
    reason: str | None = Field(default=None, max_length=2000)  # why it was replaced
    replaced_by: str | None = Field(default=None, max_length=100)  # the actor who changed it
    replaced_at: datetime | None = _ts(default=None)


class Sample(SQLModel, table=True):
    """A quality-monitoring sample: the inputs of a draw (with its seed) and the calls drawn,
    so that an auditor can re-draw it and get the same calls."""

    __tablename__ = "samples"
    __table_args__ = (sa.Index("ix_samples_tenant", "tenant", "created_at"),)

    id: uuid.UUID = Field(primary_key=True)
    tenant: str = Field(foreign_key="tenants.id", max_length=63)
    seed: str = Field(max_length=64)
    inputs: dict[str, Any] = Field(sa_type=sa.JSON)  # from, to, size | per_agent, filters...
    item_ids: list[str] = Field(sa_type=sa.JSON)  # the calls drawn, in draw order
    created_by: str = Field(max_length=100)
    created_at: datetime = _ts()


class Form(SQLModel, table=True):
    """One version of an evaluation form: named criteria, each with a weight and a maximum
    score. The highest version of a name is current; reviews keep the version they used."""

    __tablename__ = "forms"
    __table_args__ = (sa.UniqueConstraint("tenant", "name", "version", name="uq_forms_version"),)

    id: uuid.UUID = Field(primary_key=True)
    tenant: str = Field(foreign_key="tenants.id", max_length=63)
    name: str = Field(max_length=100)
    version: int
    criteria: list[dict[str, Any]] = Field(sa_type=sa.JSON)  # [{key, label, weight, max_score}]
    created_by: str = Field(max_length=100)
    created_at: datetime = _ts()


class Review(SQLModel, table=True):
    """A monitor's review of a call against a form version: one per reviewer per item,
    editable by its author (earlier versions in ``review_versions``). Deleted with the item's
    content when the item is destroyed."""

    __tablename__ = "reviews"
    __table_args__ = (
        sa.UniqueConstraint("item_id", "reviewer", name="uq_reviews_reviewer"),
        sa.Index("ix_reviews_tenant", "tenant", "created_at"),
    )

    id: uuid.UUID = Field(primary_key=True)
    tenant: str = Field(foreign_key="tenants.id", max_length=63)
    item_id: uuid.UUID = Field(foreign_key="items.id")
    reviewer: str = Field(max_length=100)  # the actor (token) that wrote it
    form_id: uuid.UUID = Field(foreign_key="forms.id")
    scores: dict[str, Any] = Field(sa_type=sa.JSON)  # criterion key -> score
    score: float  # weighted, 0 to 100
    notes: str | None = Field(default=None, max_length=10_000)
    training_need: bool = False
    version: int = 1
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class ReviewVersion(SQLModel, table=True):
    """A review as it was before an edit by its author."""

    __tablename__ = "review_versions"
    __table_args__ = (sa.UniqueConstraint("review_id", "version", name="uq_review_versions"),)

    id: uuid.UUID = Field(primary_key=True)
    review_id: uuid.UUID = Field(foreign_key="reviews.id")
    version: int
    form_id: uuid.UUID
    scores: dict[str, Any] = Field(sa_type=sa.JSON)
    score: float
    notes: str | None = Field(default=None, max_length=10_000)
    training_need: bool = False
    written_at: datetime = _ts()  # when this version was written (replaced later)


class Export(SQLModel, table=True):
    """An evidence bundle or subject-access export: what was asked for, by whom and why. The
    bundle itself is built (streamed) from the items on each download, never stored."""

    __tablename__ = "exports"
    __table_args__ = (sa.Index("ix_exports_tenant", "tenant", "created_at"),)

    id: uuid.UUID = Field(primary_key=True)
    tenant: str = Field(foreign_key="tenants.id", max_length=63)
    kind: str = Field(max_length=16)  # "evidence" or "subject-access"
    purpose: str = Field(max_length=2000)
    case_ref: str | None = Field(default=None, max_length=100)
    query: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)  # as asked
    item_ids: list[str] = Field(sa_type=sa.JSON)  # resolved when the export was created
    created_by: str = Field(max_length=100)
    role: str = Field(max_length=16)
    created_at: datetime = _ts()
