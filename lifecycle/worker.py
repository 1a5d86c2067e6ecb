"""The lifecycle worker: purge passes and sweeps on a schedule, in the manner of procrastinate's
worker (a stop event, work claimed in SQL, failures logged and survived).

``archive worker`` runs it as its own process (any number of them, on any number of
machines, on PostgreSQL); ``archive serve`` runs one inside the web process unless told
``--no-worker``. ``run`` loops until its stop event is set: a purge pass every
``purge_interval`` seconds (``purge_batch_size`` items per transaction), a sweep every
``sweep_interval`` (both due at start, so that a restart after a crash cleans up at once),
and, where the store enforces Object Lock, a reconcile after each purge pass. Setting the
event ends the loop after the current batch, whose transaction commits and whose objects are
deleted first, so an item is destroyed whole or left untouched; ``archive worker`` and
``archive serve`` set it on SIGTERM. A pass that fails is logged and the loop goes on after a
pause (a database or store outage must not stop the worker for good).
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from archive.errors import ArchiveError
from archive.service import Archive
from archive.settings import Settings
from lifecycle.purge import PurgeReport, purge_pass
from lifecycle.sweep import SweepReport, sweep
from storage.errors import StorageError

log = logging.getLogger(__name__)

ERROR_PAUSE = 30.0  # seconds before a failed pass is tried again (at most its interval)


@dataclass
class OnceReport:
    """What ``run_once`` did."""

    purge: PurgeReport
    sweep: SweepReport
    reconcile: object | None = None  # lifecycle.reconcile's report, where Object Lock is on

    def __str__(self) -> str:
        parts = [str(self.purge), str(self.sweep)]
        if self.reconcile is not None:
            parts.append(str(self.reconcile))
        return "\n".join(parts)


class Worker:
    """Runs the lifecycle passes for one archive; see the module docstring."""

    def __init__(self, archive: Archive, settings: Settings) -> None:
        self.archive = archive
        self.settings = settings

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        purge_every = float(self.settings.purge_interval)
        sweep_every = float(self.settings.sweep_interval)
        next_purge = next_sweep = loop.time()
        log.info("lifecycle worker started: purge every %d s, sweep every %d s",
                 self.settings.purge_interval, self.settings.sweep_interval)
        while not stop.is_set():
            if loop.time() >= next_purge:
                ok = await self._guard("purge", lambda: self._purge(stop))
                next_purge = loop.time() + (purge_every if ok else
                                            min(purge_every, ERROR_PAUSE))
            if not stop.is_set() and loop.time() >= next_sweep:
                ok = await self._guard("sweep", lambda: self._sweep(stop))
                next_sweep = loop.time() + (sweep_every if ok else
                                            min(sweep_every, ERROR_PAUSE))
            delay = max(0.0, min(next_purge, next_sweep) - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        log.info("lifecycle worker stopped")

    async def run_once(self, stop: asyncio.Event | None = None) -> OnceReport:
        """One purge pass, one sweep (and a reconcile where Object Lock is on). Setting
        ``stop`` ends the purge after its current batch and skips what has not begun."""
        stop = stop or asyncio.Event()
        purged = await purge_pass(self.archive, batch_size=self.settings.purge_batch_size,
                                  stop=stop)
        reconciled = None if stop.is_set() else await self._reconcile()
        swept = SweepReport(stopped=True) if stop.is_set() else await sweep(
            self.archive, grace=timedelta(seconds=self.settings.sweep_grace), stop=stop)
        if stop.is_set():
            log.info("lifecycle pass stopped early (asked to stop); the next pass goes on")
        return OnceReport(purged, swept, reconciled)

    async def _purge(self, stop: asyncio.Event) -> None:
        await purge_pass(self.archive, batch_size=self.settings.purge_batch_size, stop=stop)
        if not stop.is_set():
            await self._reconcile()

    async def _sweep(self, stop: asyncio.Event) -> None:
        await sweep(self.archive, grace=timedelta(seconds=self.settings.sweep_grace),
                    stop=stop)

    async def _reconcile(self) -> object | None:
        """Repair drift between holds in the index and the store's legal holds."""
        if not self.archive.store.supports_legal_hold:
            return None
        from lifecycle.reconcile import reconcile  # noqa: PLC0415  (only with Object Lock)

        return await reconcile(self.archive, verify=False)

    @staticmethod
    async def _guard(name: str, work: Callable[[], Awaitable[None]]) -> bool:
        """Run a pass; log a failure (no personal data) and report it instead of raising."""
        try:
            await work()
        except (ArchiveError, StorageError, SQLAlchemyError) as exc:
            # Our messages, and the database's with parameters hidden, carry no personal data.
            log.error("lifecycle %s pass failed: %s: %s; trying again later",  # noqa: TRY400
                      name, type(exc).__name__, str(exc)[:300])
            return False
        except Exception as exc:
            # Another library's message might quote data: the type only, details at DEBUG.
            log.error("lifecycle %s pass failed: %s; trying again later",  # noqa: TRY400
                      name, type(exc).__name__)
            log.debug("lifecycle %s pass failure", name, exc_info=True)
            return False
        return True
