"""The staff pages: sign-in and sign-out, search, and an item (listen to a call, read a chat).

Pages call the same domain code as the API (web.views.search.find, web.views.items) so that
they show only what the user's role may see and leave the same audit events.
"""

import secrets
import uuid
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDict

from archive.errors import ArchiveError, BadRequestError, ForbiddenError, NotFoundError
from archive.models import Channel, ItemStatus, Role
from archive.search import SEARCHABLE_STATUSES
from archive.service import MEDIA
from archive.tokens import authenticate
from archive.users import end_session, password_principal, start_session
from ingest.transcripts import Transcript
from storage.base import read_all
from web.endpoint import READERS
from web.keys import ARCHIVE, CLOCK, DATABASE, PRINCIPAL, principal
from web.pages.session import COOKIE, SESSION, clear_cookie, current, page, set_cookie
from web.views.items import readable_item, record
from web.views.search import find

SIGNIN_COOKIE = "archive_signin"  # double-submit token of the sign-in form (no session yet)
ROLE_NAMES = {Role.COMPLAINTS: "Complaints", Role.QUALITY: "Quality monitoring",
              Role.ADMIN: "Administrator", Role.AUDITOR: "Auditor",
              Role.PRIVACY: "Data protection", Role.INGEST: "Ingest system"}


def _context(request: web.Request, **values: Any) -> dict[str, Any]:
    """What every page template needs: who is signed in and the form token."""
    who = request.get(PRINCIPAL)
    session = request.get(SESSION)
    return {"who": who, "role_name": ROLE_NAMES.get(who.role) if who else None,
            "csrf": session.csrf if session else "", "can_search": bool(who and
            who.role in READERS), **values}


def _safe_next(value: str | None) -> str:
    """Only a path of this site: never another host (an open redirect)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/search"


async def signin_form(request: web.Request) -> web.StreamResponse:
    if await current(request) is not None:
        raise web.HTTPFound(_safe_next(request.query.get("next")))
    return _signin(request, errors=[], status=200)


def _signin(request: web.Request, *, errors: list[str], status: int,
            mode: str = "token") -> web.StreamResponse:
    token = secrets.token_urlsafe(24)
    response = aiohttp_jinja2.render_template(
        "signin.html", request, _context(
            request, errors=errors, signin_token=token, mode=mode,
            next=_safe_next(request.query.get("next"))), status=status)
    response.set_cookie(SIGNIN_COOKIE, token, max_age=3600, path="/signin", httponly=True,
                        samesite="Strict", secure=request.secure)
    response.headers["Cache-Control"] = "no-store"
    return response


async def signin(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    sent, expected = str(form.get("signin_token", "")), request.cookies.get(SIGNIN_COOKIE, "")
    if not sent or not secrets.compare_digest(sent, expected):
        return _signin(request, errors=["The form expired. Try again."], status=400)
    now = request.app[CLOCK].now()
    mode = "password" if form.get("username") else "token"
    async with request.app[DATABASE].session() as session:
        if mode == "password":
            who = await password_principal(session, str(form.get("username", "")),
                                           str(form.get("password", "")))
        else:
            who = await authenticate(session, str(form.get("token", "")).strip(), now)
        if who is None:
            await session.rollback()
            message = ("The username or password is not right." if mode == "password" else
                       "The token is not right, or it was revoked or has expired.")
            return _signin(request, errors=[message], status=401, mode=mode)
        secret, _ = await start_session(session, who, now)
        await session.commit()
    response = web.HTTPFound(_safe_next(str(form.get("next", ""))))
    set_cookie(response, request, secret)
    response.del_cookie(SIGNIN_COOKIE, path="/signin")
    raise response


@page()
async def signout(request: web.Request) -> web.StreamResponse:
    async with request.app[DATABASE].session() as session:
        await end_session(session, request.cookies.get(COOKIE, ""))
        await session.commit()
    response = web.HTTPFound("/signin")
    clear_cookie(response)
    raise response


@page()
async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/search" if principal(request).role in READERS else "/account")


@page()
async def account(request: web.Request) -> web.StreamResponse:
    return aiohttp_jinja2.render_template("account.html", request, _context(request))


SEARCH_FIELDS = ("caller_number", "email", "postcode", "name", "agent_id", "service", "channel",
                 "from", "to", "status", "held", "case_ref")


@page(READERS)
async def search_page(request: web.Request) -> web.StreamResponse:
    params = request.query
    asked = {k: v for k, v in params.items() if k in SEARCH_FIELDS and v.strip()}
    errors: list[dict[str, str]] = []
    items: list[Any] = []
    holds: dict[uuid.UUID, list[str]] = {}
    next_cursor = None
    searched = bool(asked) or "search" in params
    status = 200
    if searched:
        try:
            # The form sends every field; the empty ones are not filters.
            wanted = MultiDict((k, v) for k, v in params.items() if v.strip() and (
                k in SEARCH_FIELDS or k in {"cursor", "limit"}))
            result, holds = await find(request, wanted)
            items, next_cursor = result.items, result.next_cursor
        except (BadRequestError, ForbiddenError) as exc:
            status = exc.status
            errors = ([{"field": e.field, "message": e.message} for e in exc.errors] or
                      [{"field": "", "message": exc.detail}])
    who = principal(request)
    return aiohttp_jinja2.render_template("search.html", request, _context(
        request, asked=asked, errors=errors, items=items, holds=holds, searched=searched,
        next_query=_next_query(asked, next_cursor), statuses=SEARCHABLE_STATUSES,
        people_filters=who.role != Role.QUALITY, chats=who.role != Role.QUALITY),
        status=status)


def _next_query(asked: dict[str, str], cursor: str | None) -> str | None:
    if cursor is None:
        return None
    return urlencode({**asked, "cursor": cursor, "search": "1"})


@page(READERS)
async def item_page(request: web.Request) -> web.StreamResponse:
    try:
        item = await readable_item(request)
    except (NotFoundError, ForbiddenError) as exc:
        return aiohttp_jinja2.render_template(
            "error.html", request, _context(request, title=exc.title, detail=exc.detail),
            status=exc.status)
    archive = request.app[ARCHIVE]
    holds = await archive.active_holds(item.tenant, item.id)
    await record(request, "item.view", item.id, {"page": True})
    messages = None
    if item.channel == Channel.CHAT.value and item.status in {
            ItemStatus.ACTIVE.value, ItemStatus.ANONYMISED.value}:
        try:
            data = await read_all(archive.read(item, kind=MEDIA))
            messages = Transcript.from_json_bytes(data).messages
        except ArchiveError:
            messages = None
    who = principal(request)
    return aiohttp_jinja2.render_template("item.html", request, _context(
        request, item=item, holds=holds, messages=messages,
        show_customer=who.role != Role.QUALITY,
        playable=item.channel == Channel.CALL.value and item.status == ItemStatus.ACTIVE.value))
