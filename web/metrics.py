"""Prometheus metrics: ``GET /metrics`` on the service's port (with the metrics token) or on a
port of its own (``metrics_port``, no token, nothing else served there).

Each app keeps its metrics in its own ``CollectorRegistry`` (``METRICS``), so tests and several
apps in one process do not mix their counts. What is counted, and where:

- requests, by route name (never a path with ids), method and status: the outermost middleware;
- uploads, their bytes and latency, and ffmpeg transcodes: the Ingestor's observer hook;
- errors of the object store and the keyring, by operation: counting wrappers around the
  archive's store and keyring;
- items destroyed by purge passes in this process: ``lifecycle.purge.TOTALS``;
- figures of the index (items by status, overdue items and the age of the oldest, active
  holds), per tenant: queried when scraped, at most once per ``gauge_ttl`` seconds, awaited in
  the handler before the text is made, so a scrape never runs a query inside the collector.

Labels carry route names, methods, statuses, channels, operations and tenant ids: never
personal data.
"""

import asyncio
import hmac
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import sqlalchemy as sa
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlmodel import col, select

from archive.clock import Clock
from archive.db import Database
from archive.errors import ArchiveError, UnauthorizedError
from archive.models import Channel, Hold, Item, ItemStatus, Tenant
from archive.service import Archive
from archive.settings import Settings
from ingest.service import Outcome
from lifecycle import purge
from lifecycle.preview import lifecycle_stats
from storage.base import BlobInfo, BlobStore
from storage.errors import StorageError
from storage.keyring import KeyProvider, WrappedKey
from web.keys import ARCHIVE, CLOCK, DATABASE, INGESTOR, SETTINGS

log = logging.getLogger(__name__)
T = TypeVar("T")

GAUGE_TTL = 15.0  # seconds the index figures are reused between scrapes
UNMATCHED = "unmatched"  # the route label of a request that matched no route (404, 405)
CLIENT_GONE = 499  # the status label of a request whose client went away (nginx's number)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
OUTCOMES: tuple[Outcome, ...] = ("created", "retry", "rejected")
STORE_OPERATIONS = ("put", "get", "delete", "stat", "list", "set_legal_hold", "ping")
KEY_OPERATIONS = ("wrap_key", "unwrap_key", "current_key", "rotate_key", "ping_keyring")


@dataclass(frozen=True)
class IndexFigures:
    """The index's figures at one moment, per tenant."""

    items: dict[tuple[str, str], int]  # (tenant, status) -> count, every status of every tenant
    overdue: dict[str, int]
    oldest_overdue: dict[str, float]  # seconds past retain_until of the oldest overdue; 0: none
    holds: dict[str, int]  # active legal holds


async def index_figures(db: Database, now: datetime) -> IndexFigures:
    """Items by tenant and status, active holds, and the overdue figures of
    ``lifecycle_stats``: grouped queries over the ``(tenant, status, ...)`` indexes."""
    stats = await lifecycle_stats(db, now=now)
    async with db.reader() as session:
        tenants = set((await session.exec(select(Tenant.id))).all())
        counted = (await session.exec(
            select(Item.tenant, Item.status, sa.func.count())
            .group_by(col(Item.tenant), col(Item.status)))).all()
        holds = dict((await session.exec(
            select(Hold.tenant, sa.func.count()).where(Hold.status == "active")
            .group_by(col(Hold.tenant)))).all())
    tenants |= {t for t, _, _ in counted} | {s.tenant for s in stats} | set(holds)
    items = {(t, s.value): 0 for t in tenants for s in ItemStatus}
    items.update({(t, s): int(n) for t, s, n in counted})
    return IndexFigures(
        items=items,
        overdue=dict.fromkeys(tenants, 0) | {s.tenant: s.overdue for s in stats},
        oldest_overdue=dict.fromkeys(tenants, 0.0)
        | {s.tenant: s.oldest_overdue_age for s in stats},
        holds={t: int(holds.get(t, 0)) for t in tenants})


class IndexCollector(Collector):
    """The index gauges, from the figures of the last ``refresh`` (which the scrape handler
    awaits first): ``collect`` itself never touches the database."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._figures: IndexFigures | None = None
        self._taken = -math.inf  # monotonic time of the figures
        self._lock = asyncio.Lock()

    async def refresh(self, db: Database, now: datetime) -> None:
        """Query the index unless the figures are younger than ``ttl``; one query at a time,
        however many scrapes arrive together. When the index does not answer, the gauges are
        left out of the scrape (stale figures would look current) and the next scrape tries
        again."""
        async with self._lock:
            if time.monotonic() - self._taken < self.ttl:
                return
            try:
                self._figures = await index_figures(db, now)
            except (ArchiveError, sa.exc.SQLAlchemyError, OSError) as exc:
                log.warning("metrics: the index figures could not be read: %s",
                            type(exc).__name__)
                self._figures, self._taken = None, -math.inf
                return
            self._taken = time.monotonic()

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        figures = self._figures
        return self._families(figures) if figures is not None else []

    @staticmethod
    def _families(figures: IndexFigures | None) -> list[Metric]:
        items = GaugeMetricFamily("archive_items", "Items in the index by tenant and status",
                                  labels=["tenant", "status"])
        overdue = GaugeMetricFamily(
            "archive_overdue_items",
            "Active items past their retention and under no hold: the next purge's work",
            labels=["tenant"])
        oldest = GaugeMetricFamily(
            "archive_oldest_overdue_seconds",
            "Seconds since the oldest overdue item's retention ended (0: nothing overdue)",
            labels=["tenant"])
        holds = GaugeMetricFamily("archive_active_holds", "Active legal holds",
                                  labels=["tenant"])
        if figures is not None:
            for (tenant, status), n in sorted(figures.items.items()):
                items.add_metric([tenant, status], n)
            for tenant in sorted(figures.overdue):
                overdue.add_metric([tenant], figures.overdue[tenant])
                oldest.add_metric([tenant], figures.oldest_overdue[tenant])
                holds.add_metric([tenant], figures.holds[tenant])
        return [items, overdue, oldest, holds]


class PurgedCollector(Collector):
    """``archive_purged_items_total``: what the purge passes of this process destroyed."""

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily("archive_purged_items", self._HELP)]

    def collect(self) -> Iterable[Metric]:
        return [CounterMetricFamily("archive_purged_items", self._HELP,
                                    value=purge.TOTALS.destroyed)]

    _HELP = "Items destroyed at the end of their retention by purge passes in this process"


@dataclass
class Metrics:
    """One app's metrics and their registry; also the Ingestor's observer."""

    gauge_ttl: float = GAUGE_TTL
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    site: web.AppRunner | None = None  # the metrics port's, while it serves

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("archive_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=r)
        self.request_seconds = Histogram(
            "archive_http_request_seconds", "Time to answer an HTTP request", ["route"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.ingest_items = Counter("archive_ingest_items", "Uploads by what they came to",
                                    ["channel", "outcome"], registry=r)
        self.ingest_bytes = Counter("archive_ingest_bytes", "Bytes received of stored items",
                                    ["channel"], registry=r)
        self.ingest_seconds = Histogram(
            "archive_ingest_seconds", "Time to store an item, from its first byte to active",
            ["channel"], buckets=LATENCY_BUCKETS, registry=r)
        self.transcode_seconds = Histogram(
            "archive_transcode_seconds", "Time of one ffmpeg transcode and the storing of its "
            "output", buckets=LATENCY_BUCKETS, registry=r)
        self.store_errors = Counter("archive_store_errors",
                                    "Failed operations of the object store and the keyring",
                                    ["operation"], registry=r)
        self.index = IndexCollector(self.gauge_ttl)
        r.register(self.index)
        r.register(PurgedCollector())
        # Every known series from zero, so that rates and alerts work before the first event.
        for channel in Channel:
            self.ingest_bytes.labels(channel.value)
            for outcome in OUTCOMES:
                self.ingest_items.labels(channel.value, outcome)
        for operation in STORE_OPERATIONS + KEY_OPERATIONS:
            self.store_errors.labels(operation)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method if method in METHODS else "other", str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    # The Ingestor's observer (ingest.service.IngestObserver).
    def ingested(self, channel: Channel, outcome: Outcome, size: int, seconds: float) -> None:
        self.ingest_items.labels(channel.value, outcome).inc()
        if outcome == "created":
            self.ingest_bytes.labels(channel.value).inc(size)
            self.ingest_seconds.labels(channel.value).observe(seconds)

    def transcoded(self, seconds: float) -> None:
        self.transcode_seconds.observe(seconds)

    def store_failed(self, operation: str) -> None:
        self.store_errors.labels(operation).inc()

    async def render(self, db: Database, now: datetime) -> bytes:
        """The exposition text: the index figures refreshed (when older than ``gauge_ttl``)
        before the registry is read."""
        await self.index.refresh(db, now)
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", Metrics)


@dataclass(frozen=True)
class Scrape:
    """What a scrape reads: the metrics, and the index and clock of their gauges."""

    metrics: Metrics
    db: Database
    clock: Clock

    async def response(self) -> web.Response:
        body = await self.metrics.render(self.db, self.clock.now())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


SCRAPE = web.AppKey("scrape", Scrape)  # of the metrics port's app


# -- counting wrappers -------------------------------------------------------------------------


async def _counted(failed: Callable[[str], None], operation: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except StorageError:
        failed(operation)
        raise


async def _counted_iter(failed: Callable[[str], None], operation: str,
                        items: AsyncIterator[T]) -> AsyncIterator[T]:
    """Yield from ``items``, counting a failure, and close it however the loop ends (an S3
    body stays open until its generator is closed)."""
    try:
        async for item in items:
            yield item
    except StorageError:
        failed(operation)
        raise
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


class CountingStore:
    """A ``BlobStore`` that counts the errors of another, by operation."""

    def __init__(self, inner: BlobStore, failed: Callable[[str], None]) -> None:
        self.inner = inner
        self.name = inner.name
        self._failed = failed

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        return await _counted(self._failed, "put", self.inner.put(key, chunks))

    def get(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return _counted_iter(self._failed, "get", self.inner.get(key, start, end))

    async def delete(self, key: str) -> None:
        await _counted(self._failed, "delete", self.inner.delete(key))

    async def stat(self, key: str) -> BlobInfo | None:
        return await _counted(self._failed, "stat", self.inner.stat(key))

    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        return _counted_iter(self._failed, "list", self.inner.list(prefix))

    @property
    def supports_legal_hold(self) -> bool:
        return self.inner.supports_legal_hold

    async def set_legal_hold(self, key: str, on: bool) -> None:
        await _counted(self._failed, "set_legal_hold", self.inner.set_legal_hold(key, on))

    async def ping(self) -> None:
        await _counted(self._failed, "ping", self.inner.ping())

    async def close(self) -> None:
        await self.inner.close()


class CountingKeyring:
    """A ``KeyProvider`` that counts the errors of another, by operation."""

    def __init__(self, inner: KeyProvider, failed: Callable[[str], None]) -> None:
        self.inner = inner
        self.name = inner.name
        self._failed = failed

    async def wrap(self, tenant: str, key: bytes, context: str) -> WrappedKey:
        return await _counted(self._failed, "wrap_key", self.inner.wrap(tenant, key, context))

    async def unwrap(self, tenant: str, wrapped: WrappedKey, context: str) -> bytes:
        return await _counted(self._failed, "unwrap_key",
                              self.inner.unwrap(tenant, wrapped, context))

    async def current_kek_id(self, tenant: str) -> str:
        return await _counted(self._failed, "current_key", self.inner.current_kek_id(tenant))

    async def rotate(self, tenant: str) -> str:
        return await _counted(self._failed, "rotate_key", self.inner.rotate(tenant))

    async def ping(self) -> None:
        await _counted(self._failed, "ping_keyring", self.inner.ping())

    async def close(self) -> None:
        await self.inner.close()


# -- the app's side ----------------------------------------------------------------------------


def route_label(request: web.Request) -> str:
    """The route's name from the route table; ``unmatched`` for no route (or no method)."""
    route = request.match_info.route
    if route.resource is None:  # aiohttp's system route: 404, 405
        return UNMATCHED
    return route.name or route.resource.canonical


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request by its final status (the outermost middleware, so the
    error middleware's answers are counted as sent)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects the pages raise, and the like
        status = exc.status
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        status = CLIENT_GONE
        raise
    else:
        status = response.status
        return response
    finally:
        request.app[METRICS].request(route_label(request), request.method, status,
                                     time.perf_counter() - started)


async def token_scrape(request: web.Request) -> web.Response:
    """``GET /metrics`` on the service's port: only with ``Bearer <metrics_token>``."""
    token = request.app[SETTINGS].metrics_token
    if not token:  # the route exists only with a token; never compare with an empty one
        raise web.HTTPNotFound
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            secret.strip().encode("utf-8", "surrogateescape"), token.encode()):
        raise UnauthorizedError("send 'Authorization: Bearer <metrics_token>'")
    app = request.app
    return await Scrape(app[METRICS], app[DATABASE], app[CLOCK]).response()


async def _open_scrape(request: web.Request) -> web.Response:
    """``GET /metrics`` on the metrics port (no token: the port is kept off public networks)."""
    return await request.app[SCRAPE].response()


def instrument(archive: Archive, metrics: Metrics) -> Callable[[], None]:
    """Count the errors of the archive's store and keyring in ``metrics``; return the undo."""
    store, keys = archive.store, archive.keys
    archive.store = CountingStore(store, metrics.store_failed)
    archive.keys = CountingKeyring(keys, metrics.store_failed)

    def undo() -> None:
        archive.store, archive.keys = store, keys

    return undo


async def _instrument(app: web.Application) -> AsyncIterator[None]:
    """Count the errors of the archive's store and keyring, and observe its uploads."""
    undo = instrument(app[ARCHIVE], app[METRICS])
    app[INGESTOR].observer = app[METRICS]
    yield
    undo()


def setup_metrics(app: web.Application) -> None:
    """Give ``app`` its metrics: the registry, the outermost middleware, ``GET /metrics``
    (when ``metrics_token`` is set) and the counting of store errors and uploads. Call it
    after the cleanup context that makes the archive and before any that uses it."""
    app[METRICS] = Metrics()
    app.middlewares.insert(0, metrics_middleware)
    if app[SETTINGS].metrics_token:
        app.router.add_route("GET", "/metrics", token_scrape, name="metrics")
    app.cleanup_ctx.append(_instrument)


async def serve_metrics(scrape: Scrape, host: str, port: int) -> web.AppRunner:
    """Serve ``GET /metrics`` (and nothing else) on ``host:port`` without a token; the runner
    to clean up. ``archive serve`` uses it for ``metrics_port``; any process with an index can
    (``archive worker``: ``Metrics()``, ``instrument`` its archive, then this)."""
    only = web.Application()
    only[SCRAPE] = scrape
    only.router.add_route("GET", "/metrics", _open_scrape, name="metrics")
    runner = web.AppRunner(only, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("metrics on http://%s:%d/metrics", host, port)
    return runner


async def start_metrics_site(app: web.Application, settings: Settings) -> web.AppRunner | None:
    """When ``metrics_port`` is set, serve the started ``app``'s ``GET /metrics`` on
    ``host:metrics_port`` without a token, until ``stop_metrics_site``."""
    if settings.metrics_port <= 0:
        return None
    runner = await serve_metrics(Scrape(app[METRICS], app[DATABASE], app[CLOCK]),
                                 settings.host, settings.metrics_port)
    app[METRICS].site = runner
    return runner


async def stop_metrics_site(app: web.Application) -> None:
    """Stop the metrics port of ``app`` if it has one."""
    metrics = app[METRICS]
    runner, metrics.site = metrics.site, None
    if runner is not None:
        await runner.cleanup()
