"""Liveness, readiness, identity and the API description."""

import asyncio

from aiohttp import web

from archive.errors import ArchiveError
from storage.errors import StorageError
from web.keys import DATABASE, KEYRING, OPENAPI, STORE, principal

READY_TIMEOUT = 5.0


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving (says nothing of its dependencies)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Every dependency answers: the index, the object store and the keyring."""
    app = request.app
    probes = {"index": app[DATABASE].ping(), "store": app[STORE].ping(),
              "keyring": app[KEYRING].ping()}
    checks: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            await asyncio.wait_for(probe, READY_TIMEOUT)
            checks[name] = "ok"
        except TimeoutError:
            checks[name] = "timed out"
        except (ArchiveError, StorageError, OSError) as exc:
            checks[name] = f"unavailable ({type(exc).__name__})"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ready" if ready else "unavailable", "checks": checks},
                             status=200 if ready else 503)


async def whoami(request: web.Request) -> web.Response:
    """The caller's tenant and role: lets an integrator check a token."""
    who = principal(request)
    return web.json_response({"tenant": who.tenant, "role": who.role.value,
                              "token_id": str(who.token_id)})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])
