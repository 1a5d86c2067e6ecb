"""Bearer-token authentication and the role check of the route table (web/routes.py)."""

from aiohttp import web
from aiohttp.typedefs import Handler

from archive.errors import ForbiddenError, UnauthorizedError
from archive.tokens import authenticate
from web.keys import CLOCK, DATABASE, PRINCIPAL
from web.routes import ENDPOINTS_BY_NAME


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    endpoint = ENDPOINTS_BY_NAME.get(request.match_info.route.name or "")
    if endpoint is None or endpoint.roles is None:
        return await handler(request)  # public, or no such route (the handler says 404/405)
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise UnauthorizedError("send 'Authorization: Bearer <token>'")
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
