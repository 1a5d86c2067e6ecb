"""The application factory: settings in, a wired aiohttp app out.

Each resource is an async generator in ``app.cleanup_ctx`` (set up, ``yield``, tear down), in
dependency order, so start-up failures unwind what was opened and shutdown closes in reverse.
"""

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from archive.backends import open_keyring, open_store
from archive.clock import Clock, SystemClock
from archive.db import Database
from archive.service import Archive
from archive.settings import Settings
from ingest.service import Ingestor
from lifecycle.policies import sync_settings_policies
from lifecycle.worker import Worker
from web.auth import auth_middleware
from web.errors import error_middleware
from web.keys import (
    ARCHIVE,
    CLOCK,
    DATABASE,
    INGESTOR,
    KEYRING,
    OPENAPI,
    PRINCIPAL,
    REQUEST_ID,
    ROUTE,
    SETTINGS,
    STORE,
)
from web.metrics import setup_metrics
from web.openapi import document
from web.pages import setup_pages
from web.ratelimit import setup_ratelimit
from web.routes import add_routes
from web.shutdown import STOPPING, setup_drain

access_log = logging.getLogger("archive.access")


class AccessLogger(AbstractAccessLogger):
    """One line per request with the route's name, never its query string or path values:
    search filters carry phone numbers and emails, which must not reach the logs. The fields
    (request id, tenant once authenticated, route, method, status, duration) go to the
    record's ``extra`` for the JSON formatter (archive/logs.py)."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        who = request.get(PRINCIPAL)
        route = request.get(ROUTE, "-")
        duration_ms = round(time * 1000, 1)
        self.logger.info(
            "%s %s %s %.1fms", request.method, route, response.status, duration_ms,
            extra={"request_id": request.get(REQUEST_ID, "-"),
                   "tenant": who.tenant if who is not None else None, "route": route,
                   "method": request.method, "status": response.status,
                   "duration_ms": duration_ms})


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    db = Database(settings.resolved_database_url)
    try:
        if settings.auto_migrate:
            await db.upgrade()
        app[DATABASE] = db
        yield
    finally:
        await db.close()


async def _store(app: web.Application) -> AsyncIterator[None]:
    store = await open_store(app[SETTINGS])
    app[STORE] = store
    yield
    await store.close()


async def _keyring(app: web.Application) -> AsyncIterator[None]:
    keys = await open_keyring(app[SETTINGS])
    app[KEYRING] = keys
    yield
    await keys.close()


async def _archive(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    archive = Archive(app[DATABASE], app[STORE], app[KEYRING], app[CLOCK],
                      settings.segment_size, windows=settings.retention_windows)
    app[ARCHIVE] = archive
    app[INGESTOR] = Ingestor.from_settings(archive, settings)
    await sync_settings_policies(archive)
    yield


async def _worker(app: web.Application) -> AsyncIterator[None]:
    """The in-process lifecycle worker of ``archive serve`` (unless ``--no-worker``). It
    stops after its current batch once the server begins to stop (``STOPPING``, set as
    SIGTERM's drain begins: web/shutdown.py), and is awaited before the index closes."""
    stop = app[STOPPING]
    task = asyncio.create_task(Worker(app[ARCHIVE], app[SETTINGS]).run(stop),
                               name="lifecycle-worker")
    yield
    stop.set()
    await task


def create_app(settings: Settings, *, clock: Clock | None = None,
               worker: bool = False) -> web.Application:
    """The application; ``worker`` also runs the lifecycle worker inside it (``archive
    serve`` does unless told not to; tests start their own)."""
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    app.cleanup_ctx.extend([_database, _store, _keyring, _archive])
    setup_drain(app)  # graceful shutdown: requests in flight, STOPPING
    setup_metrics(app)  # before the worker: it counts the store errors of the archive's users
    if worker:
        app.cleanup_ctx.append(_worker)
    add_routes(app)
    setup_pages(app)
    setup_ratelimit(app)
    app[OPENAPI] = document()
    return app
