"""Graceful shutdown of ``archive serve``: drain, then cut off what is left.

aiohttp's own ``AppRunner.cleanup`` (with ``shutdown_timeout``) stops listening and waits for
handlers, but from that moment it discards every byte that arrives on an open connection
(``RequestHandler.data_received`` returns early once the connection is closing): an upload
whose body is still arriving can never finish under it, only time out. So the drain happens
here first, while connections still read:

1. ``STOPPING`` is set (the in-process lifecycle worker stops after its current batch) and
   the listening sockets close: new connections are refused.
2. Requests in flight, tracked by ``drain_middleware`` (the task of each, which also writes
   its response), get up to ``shutdown_timeout`` seconds to finish. Responses given while
   draining say ``Connection: close``.
3. What is still running is cut off, the way aiohttp itself does it: the request's body is
   failed with ``CancelledError`` (a handler reading it stops at that read, and an upload is
   rolled back by ``Archive.writer``: no row, no object, no temporary file); a handler not
   reading its body after ``CUT_GRACE`` seconds is cancelled. Each cut-off is logged (route
   and request id, nothing else).

Then ``AppRunner.cleanup`` (``archive serve`` calls it next) finds nothing in flight: it
closes idle connections and runs the application's cleanup (the worker is awaited, then the
index, store and keyring close).
"""

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from web.keys import PRINCIPAL, REQUEST_ID, ROUTE

log = logging.getLogger(__name__)

CUT_GRACE = 10.0  # seconds a cut-off request has to roll back before it is cancelled


class Drain:
    """The requests in flight, and whether the server is draining."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight: dict[asyncio.Task[Any], web.Request] = {}

    def track(self, request: web.Request) -> None:
        task = asyncio.current_task()
        if task is not None and task not in self.in_flight:
            # Removed when the task ends: after the response is written, not before.
            self.in_flight[task] = request
            task.add_done_callback(self._done)

    def _done(self, task: "asyncio.Task[Any]") -> None:
        self.in_flight.pop(task, None)

    async def wait(self, seconds: float) -> None:
        """Wait until nothing is in flight, or ``seconds``. New requests may still arrive on
        connections already open (keep-alive); they are waited for too."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.in_flight and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self.in_flight), timeout=left)

    async def cut_off(self) -> int:
        """Fail the body of every request still in flight, then cancel those that do not end
        within ``CUT_GRACE``; return how many were cut off."""
        cut = dict(self.in_flight)
        for request in cut.values():
            _log_cut(request)
            # As aiohttp's RequestHandler.shutdown does: the next read of the body raises.
            request.content.set_exception(asyncio.CancelledError())
        if cut:
            await asyncio.wait(list(cut), timeout=CUT_GRACE)
        stuck = [task for task in cut if not task.done()]
        for task in stuck:
            task.cancel()
        if stuck:
            await asyncio.wait(stuck, timeout=CUT_GRACE)
        return len(cut)


DRAIN = web.AppKey("drain", Drain)
STOPPING = web.AppKey("stopping", asyncio.Event)  # set when the server begins to stop


@web.middleware
async def drain_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Track each request's task while it runs; when draining, close connections after
    their response."""
    requests = request.app[DRAIN]
    requests.track(request)
    response = await handler(request)
    if requests.draining:
        response.force_close()
    return response


def setup_drain(app: web.Application) -> None:
    """Give ``app`` what ``drain`` needs (called by the app factory)."""
    app[DRAIN] = Drain()
    app[STOPPING] = asyncio.Event()
    app.middlewares.insert(0, drain_middleware)  # outermost: error answers close too


async def drain(runner: web.AppRunner, grace: float) -> None:
    """Steps 1 to 3 of the module docstring; ``runner.cleanup()`` comes after."""
    app = runner.app
    requests = app[DRAIN]
    requests.draining = True
    app[STOPPING].set()
    for site in list(runner.sites):
        await site.stop()
    log.info("stopping: new connections refused; %d request(s) in flight have %d s to finish",
             len(requests.in_flight), grace)
    await requests.wait(grace)
    if requests.in_flight:
        cut = await requests.cut_off()
        log.warning("stopping: cut off %d request(s) not finished within %d s", cut, grace)


def _log_cut(request: web.Request) -> None:
    who = request.get(PRINCIPAL)
    route = request.get(ROUTE, "-")
    log.warning("request cut off by shutdown: %s %s", request.method, route,
                extra={"request_id": request.get(REQUEST_ID, "-"), "route": route,
                       "method": request.method,
                       "tenant": who.tenant if who is not None else None})
