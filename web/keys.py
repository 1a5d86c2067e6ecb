"""Typed keys for everything the application holds: no globals, one place to look."""

from typing import Any

from aiohttp import web

from archive.clock import Clock
from archive.db import Database
from archive.service import Archive
from archive.settings import Settings
from archive.tokens import Principal
from ingest.service import Ingestor
from storage.base import BlobStore
from storage.keyring import KeyProvider

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
DATABASE = web.AppKey("database", Database)
STORE = web.AppKey("store", BlobStore)
KEYRING = web.AppKey("keyring", KeyProvider)
ARCHIVE = web.AppKey("archive", Archive)
OPENAPI = web.AppKey("openapi", dict[str, Any])
INGESTOR = web.AppKey("ingestor", Ingestor)

# Per-request values set by the middlewares.
PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ID = web.RequestKey("request_id", str)
ROUTE = web.RequestKey("route", str)


def principal(request: web.Request) -> Principal:
    """The authenticated caller of a protected route (set by the auth middleware)."""
    return request[PRINCIPAL]
