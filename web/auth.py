"""Bearer-token authentication (or a signed-in browser's session cookie) and the role check of
the route table (web/routes.py).

A token is also accepted as the password of HTTP Basic authentication (the user name is
ignored): some telephony systems can only put credentials in a URL, such as FreeSWITCH's
``record_session http_cache://http://ingest:TOKEN@host/...``, which libcurl sends as
``Authorization: Basic base64(ingest:TOKEN)``. The token is then checked exactly like a bearer
token (``archive.tokens.authenticate``: hashed, compared in constant time, revocation and
expiry honoured). Only ingest tokens are accepted that way (see ``BASIC_FOR_INGEST``)."""

import base64
import binascii
import hmac

from aiohttp import web
from aiohttp.typedefs import Handler

from archive.errors import ForbiddenError, UnauthorizedError
from archive.models import Role
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
    who: Principal | None
    if not header and COOKIE in request.cookies:
        who = await _from_session(request)
    else:
        secret = presented_token(header)
        if secret is None:
            raise UnauthorizedError(HINT)
        async with request.app[DATABASE].reader() as session:
            who = await authenticate(session, secret, request.app[CLOCK].now())
        if who is not None and who.role is not Role.INGEST and not _is_bearer(header):
            raise UnauthorizedError(BASIC_FOR_INGEST)
    if who is None:
        raise UnauthorizedError("the token is unknown, expired or revoked")
    if who.role not in endpoint.roles:
        allowed = ", ".join(sorted(r.value for r in endpoint.roles))
        raise ForbiddenError(f"role {who.role.value!r} may not {endpoint.summary.lower()} "
                             f"(allowed: {allowed})")
    request[PRINCIPAL] = who
    return await handler(request)


HINT = ("send 'Authorization: Bearer <token>', or an ingest token as the password of HTTP "
        "Basic authentication (e.g. a URL like https://ingest:<token>@host/...)")
# A browser that once followed a URL with credentials replays them on its own, so a Basic
# credential could ride on a cross-site request. Only ingest tokens (which can add items but
# read nothing) may travel that way; staff roles use a bearer token or a session.
BASIC_FOR_INGEST = ("HTTP Basic authentication is accepted for ingest tokens only; send "
                    "'Authorization: Bearer <token>'")


def _is_bearer(header: str) -> bool:
    return header.partition(" ")[0].lower() == "bearer"


def presented_token(header: str) -> str | None:
    """The token an ``Authorization`` header presents, or ``None`` when it presents none.

    ``Bearer <token>``, or ``Basic base64(user:token)`` with any user name (the password is the
    token). A Basic value that is not valid base64, not UTF-8 or has no colon presents none.
    The token is only extracted here; whether it is valid is for ``authenticate``.
    """
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if not value:
        return None
    if scheme.lower() == "bearer":
        return value
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    _user, colon, password = decoded.partition(":")
    return password if colon and password else None


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
