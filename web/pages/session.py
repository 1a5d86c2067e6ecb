"""Signed-in browsers: the session cookie, the CSRF check of forms, and the page guard.

The cookie (``archive_session``) is HttpOnly, SameSite=Strict, and Secure when the request came
over TLS (directly, or through a proxy that says so in ``X-Forwarded-Proto``). Every form carries
the session's CSRF token in a hidden field, checked on each POST; SameSite=Strict already keeps
other sites' forms from sending the cookie, the token keeps it so if a browser does not.
"""

import hmac
from collections.abc import Awaitable, Callable, Iterable
from functools import wraps
from urllib.parse import quote

from aiohttp import web

from archive.models import Role, WebSession
from archive.tokens import Principal
from archive.users import SESSION_HOURS, find_session
from web.keys import CLOCK, DATABASE, PRINCIPAL

COOKIE = "archive_session"
SESSION = web.RequestKey("web_session", WebSession)
PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A page route: method, path, handler, route name (each page module lists its own in PAGES).
PageRoute = tuple[str, str, PageHandler, str]


def is_tls(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"


def set_cookie(response: web.StreamResponse, request: web.Request, secret: str) -> None:
    response.set_cookie(COOKIE, secret, max_age=SESSION_HOURS * 3600, path="/",
                        httponly=True, samesite="Strict", secure=is_tls(request))


def clear_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")


async def current(request: web.Request) -> tuple[Principal, WebSession] | None:
    """The signed-in principal and session of the request's cookie, if any is still good."""
    secret = request.cookies.get(COOKIE, "")
    if not secret:
        return None
    async with request.app[DATABASE].reader() as session:
        return await find_session(session, secret, request.app[CLOCK].now())


def csrf_ok(request: web.Request, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(str(sent), request[SESSION].csrf)


def page(roles: Iterable[Role] | None = None) -> Callable[[PageHandler], PageHandler]:
    """Guard a page: signed in (else to the sign-in page, coming back after), and of one of
    ``roles`` when given (else 403). POSTs must carry the session's CSRF token."""
    allowed = frozenset(roles) if roles is not None else None

    def wrap(handler: PageHandler) -> PageHandler:
        @wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            found = await current(request)
            if found is None:
                raise web.HTTPFound(f"/signin?next={quote(request.path_qs, safe='')}")
            who, session = found
            request[PRINCIPAL] = who
            request[SESSION] = session
            if allowed is not None and who.role not in allowed:
                raise web.HTTPForbidden(text="Your role may not use this page.")
            if request.method == "POST":
                form = await request.post()
                sent = form.get("csrf_token")
                if not csrf_ok(request, sent if isinstance(sent, str) else None):
                    raise web.HTTPForbidden(
                        text="The form has expired or did not come from this site: "
                             "go back, reload the page and try again.")
            response = await handler(request)
            response.headers["Cache-Control"] = "no-store"
            return response
        return guarded
    return wrap
