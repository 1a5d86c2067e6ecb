"""The staff pages: sign-in and sign-out, search, and an item (listen to a call and see its
waveform, read a chat; its history and audit trail for the roles that may see them).

Pages call the same domain code as the API (web.views.search.find, web.views.items) so that
they show only what the user's role may see and leave the same audit events.
"""

import itertools
import secrets
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDict

from archive import audit, rights
from archive.errors import ArchiveError, BadRequestError, ForbiddenError, NotFoundError
from archive.models import Channel, Item, ItemStatus, Role
from archive.search import SEARCHABLE_STATUSES
from archive.service import MEDIA
from archive.tokens import authenticate
from archive.users import end_session, password_principal, start_session
from archive.waveform import channels_of, size_of
from ingest.transcripts import Transcript
from storage.base import read_all
from web.endpoint import READERS
from web.keys import ARCHIVE, CLOCK, DATABASE, principal
from web.pages.render import context, field_errors
from web.pages.session import COOKIE, clear_cookie, current, page, set_cookie
from web.ratelimit import SIGNIN_LIMITER, SignInLimiter, client_address
from web.views.items import readable_item, record
from web.views.rights import HISTORY_READERS
from web.views.search import find

SIGNIN_COOKIE = "archive_signin"  # double-submit token of the sign-in form (no session yet)


def _safe_next(value: str | None) -> str:
    """Only a path of this site: never another host (an open redirect)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def signin_form(request: web.Request) -> web.StreamResponse:
    if await current(request) is not None:
        raise web.HTTPFound(_safe_next(request.query.get("next")))
    return _signin(request, errors=[], status=200)


def _signin(request: web.Request, *, errors: list[str], status: int,
            mode: str = "token") -> web.StreamResponse:
    token = secrets.token_urlsafe(24)
    first = "#username" if mode == "password" else "#token"
    response = aiohttp_jinja2.render_template(
        "signin.html", request, context(
            request, errors=[{"text": e, "href": first} for e in errors],
            signin_token=token, mode=mode,
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
    limiter = request.app[SIGNIN_LIMITER]  # web/ratelimit.py: failures per address, user
    keys = SignInLimiter.keys(client_address(request),
                              str(form.get("username", "")) if mode == "password" else None)
    wait = limiter.retry_after(keys, now)
    if wait is not None:
        minutes = -(-wait // 60)
        refused = _signin(request, status=429, mode=mode, errors=[
            f"Too many failed sign-ins. Wait {minutes} minute{'s' if minutes != 1 else ''} "
            "and try again, or ask your administrator."])
        refused.headers["Retry-After"] = str(wait)
        return refused
    async with request.app[DATABASE].session() as session:
        if mode == "password":
            who = await password_principal(session, str(form.get("username", "")),
                                           str(form.get("password", "")))
        else:
            who = await authenticate(session, str(form.get("token", "")).strip(), now)
        if who is None:
            await session.rollback()
            limiter.failed(keys, now)
            message = ("The username or password is not right." if mode == "password" else
                       "The token is not right, or it was revoked or has expired.")
            return _signin(request, errors=[message], status=401, mode=mode)
        secret, _ = await start_session(session, who, now)
        await session.commit()
    limiter.succeeded(keys)
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
    """Each role starts at the first page of its menu (an auditor at the audit log)."""
    menu = context(request)["menu"]
    raise web.HTTPFound(menu[0][1] if menu else "/account")


@page()
async def account(request: web.Request) -> web.StreamResponse:
    return aiohttp_jinja2.render_template("account.html", request, context(request))


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
            errors = field_errors(exc, {name: f"f-{name}" for name in SEARCH_FIELDS})
    who = principal(request)
    return aiohttp_jinja2.render_template("search.html", request, context(
        request, asked=asked, errors=errors, items=items, holds=holds, searched=searched,
        next_query=_next_query(asked, next_cursor), statuses=SEARCHABLE_STATUSES,
        people_filters=who.role != Role.QUALITY, chats=who.role != Role.QUALITY),
        status=status)


def _next_query(asked: dict[str, str], cursor: str | None) -> str | None:
    if cursor is None:
        return None
    return urlencode({**asked, "cursor": cursor, "search": "1"})


# Field names of an item's history, as the page labels them.
HISTORY_LABELS = {"caller_number": "Caller", "called_number": "Called",
                  "customer_name": "Customer", "customer_email": "Email",
                  "customer_postcode": "Postcode", "agent_id": "Agent",
                  "agent_extension": "Extension", "service": "Service", "queue": "Queue",
                  "direction": "Direction", "tags": "Tags",
                  "special_category": "Special category"}
ITEM_EVENTS = 20  # the latest events of an item shown on its page; the audit page has all


def _duration_text(seconds: float | None) -> str:
    if not seconds:
        return ""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} second{'s' if whole != 1 else ''}"
    return f"{whole // 60} min {whole % 60:02d} s"


def _waveform(item: Item) -> dict[str, Any]:
    """What the page needs to show a call's waveform (archive/waveform.py draws it)."""
    channels = channels_of(item)
    width, height = size_of(channels)
    length = _duration_text(item.duration)
    recording = f"the {length} recording" if length else "the recording"
    if channels == 2:
        drawn = ("two channels drawn apart: channel 1 (left) above in blue, channel 2 (right) "
                 "below in orange")
    elif channels == 1:
        drawn = "one channel, in blue"
    else:
        drawn = f"{channels} channels drawn over each other, in blue"
    return {"src": f"/v1/items/{item.id}/waveform.png", "width": width, "height": height,
            "stereo": channels == 2, "alt": f"Waveform of {recording}: {drawn}."}


def _shown(value: Any) -> str:
    if value is None or value in ("", []):
        return "(none)"
    if isinstance(value, bool):
        return "Yes" if value else "No"
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _history_rows(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each earlier version of an item (newest first): when and by whom it was replaced, why,
    and each field it changed, from what to what."""
    rows = []
    for older, newer in itertools.pairwise(versions):
        changes = [(HISTORY_LABELS.get(name, name), _shown(value),
                    _shown(newer["fields"].get(name)))
                   for name, value in older["fields"].items()
                   if newer["fields"].get(name) != value]
        at = older["replaced_at"]
        rows.append({"version": older["version"], "replaced_by": older["replaced_by"],
                     "replaced_at": datetime.fromisoformat(at) if at else None,
                     "reason": older["reason"], "changes": changes})
    return rows[::-1]


async def _history(request: web.Request, item: Item) -> list[dict[str, Any]] | None:
    """The item's earlier versions for roles that may read them (what ``GET
    /v1/items/{id}/history`` answers, and audited the same way when there are any)."""
    if principal(request).role not in HISTORY_READERS:
        return None
    versions = await rights.history(request.app[ARCHIVE], item)
    if len(versions) > 1:
        await record(request, "item.history", item.id,
                     {"versions": len(versions), "page": True})
    return _history_rows(versions)


async def _audit_trail(request: web.Request, item: Item) -> audit.EventPage | None:
    """The item's latest audit events, for administrators (reading the log is itself
    recorded, as ``GET /v1/audit/events`` records it)."""
    if principal(request).role != Role.ADMIN:
        return None
    query = audit.EventQuery(item_id=item.id, limit=ITEM_EVENTS)
    async with request.app[DATABASE].reader() as session:
        found = await audit.list_events(session, item.tenant, query)
    await record(request, "audit.list", None,
                 {"filters": query.filter_names(), "count": len(found.events), "page": True})
    return found


@page(READERS)
async def item_page(request: web.Request) -> web.StreamResponse:
    try:
        item = await readable_item(request)
    except (NotFoundError, ForbiddenError) as exc:
        return aiohttp_jinja2.render_template(
            "error.html", request, context(request, title=exc.title, detail=exc.detail),
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
    playable = item.channel == Channel.CALL.value and item.status == ItemStatus.ACTIVE.value
    return aiohttp_jinja2.render_template("item.html", request, context(
        request, item=item, holds=holds, messages=messages,
        show_customer=who.role != Role.QUALITY, playable=playable,
        waveform=_waveform(item) if playable else None,
        history=await _history(request, item), trail=await _audit_trail(request, item)))
