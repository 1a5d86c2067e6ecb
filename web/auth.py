"""Bearer-token authentication (or a signed-in browser's session cookie) and the role check of
the route table (web/routes.py)."""

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler

from archive.errors import ForbiddenError, UnauthorizedError
from archive.tokens import Principal, authenticate
from web.keys import CLOCK, DATABASE, PRINCIPAL
from web.pages.session import COOKIE, current
from web.routes import ENDPOINTS_BY_NAME


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    endpoint = ENDPOINTS_BY_NAME.get(request.match_info.route.name or "")
    if endpoint is None or endpoint.roles is None:
        return await handler(request)  # public, or no such route (the handler says 404/405)
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    who: Principal | None
    if not header and COOKIE in request.cookies:
        who = await _from_session(request)
    elif scheme.lower() != "bearer" or not secret.strip():
        raise UnauthorizedError("send 'Authorization: Bearer <token>'")
    else:
        async with request.app[DATABASE].reader() as session:
            who = await authenticate(session, secret.strip(), request.app[CLOCK].now())
    if who is None:
        raise UnauthorizedError("the token is unknown, expired or revoked")
    if who.role not in endpoint.roles:
        allowed = ", ".join(sorted(r.value for r in endpoint.roles))
        raise ForbiddenError(f"role {who.role.value!r} may not {endpoint.summary.lower()} "
                             f"(allowed: {allowed})")
    request[PRINCIPAL] = who
    return await handler(request)


async def _from_session(request: web.Request) -> Principal:
    """A signed-in browser calling the API (the pages' audio player, their scripts). Reads
    only: a change through a cookie also needs the session's CSRF token in ``X-CSRF-Token``."""
    found = await current(request)
    if found is None:
        raise UnauthorizedError("the session has ended: sign in again")
    who, web_session = found
    if request.method not in {"GET", "HEAD"}:
        sent = request.headers.get("X-CSRF-Token", "")
        if not sent or not hmac.compare_digest(sent, web_session.csrf):
            raise ForbiddenError("a change made with a session cookie needs X-CSRF-Token")
    return who
