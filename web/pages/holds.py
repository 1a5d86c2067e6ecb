"""The holds pages: place a legal hold from a search (everything matching it, live, or the
items selected in the results), list the holds, read one and release it.

They call ``lifecycle.holds`` as the API does (web/views/holds.py), so the same rules hold and
the same audit events are written (``hold.place``, ``hold.list``, ``hold.view``,
``hold.release``). Complaints staff and administrators only (``render.HOLDERS``, the API's
``MAKERS``). Every change is a POST that redirects (303) to a page showing its outcome.
"""

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiMapping

from archive.errors import ArchiveError, BadRequestError, ConflictError, FieldError, NotFoundError
from archive.exports import find_items
from archive.ids import parse_uuid
from archive.models import Channel
from archive.search import NOT_FOR_HOLDS, PARAMETERS, parse_query
from archive.service import Actor
from lifecycle import holds
from web.keys import ARCHIVE, principal
from web.pages.render import HOLDERS, error_page, form_value, render
from web.pages.session import PageRoute, page
from web.views.items import record

# The search filters a hold may use (not an item's current state: status, held, case_ref).
QUERY_FIELDS = tuple(name for name in PARAMETERS if name not in NOT_FOR_HOLDS)
FILTER_LABELS = {"caller_number": "Phone number (caller or called)", "email": "Customer email",
                 "postcode": "Postcode", "name": "Customer name", "agent_id": "Agent",
                 "service": "Service", "channel": "Channel", "from": "Started on or after",
                 "to": "Started before", "status": "Status", "held": "Legal hold",
                 "case_ref": "Complaint case reference"}
FORM_LABELS = {"case_ref": "Case reference", "reason": "Reason", "item_ids": "Items",
               "query": "Search", "status": "Status", "cursor": "Page"}
LIST_PAGE = 50
ITEMS_PAGE = 50


# -- shared with the exports pages -------------------------------------------------------------

def summary(errors: Iterable[FieldError], anchors: Mapping[str, str]) -> list[dict[str, str]]:
    """An error summary: each error in words naming its field, with a link to the field's
    input where the form has one (``anchors``: field name -> element id)."""
    rows = []
    for e in errors:
        base, _, rest = e.field.partition(".")
        base = base.split("[")[0]
        if base == "query" and rest:
            label = FILTER_LABELS.get(rest, rest)
        else:
            label = FORM_LABELS.get(base, base.replace("_", " ").capitalize())
        rows.append({"field": base, "text": f"{label} {e.message}" if e.field else e.message,
                     "href": f"#{anchors[base]}" if base in anchors else ""})
    return rows


def errors_of(exc: ArchiveError) -> list[FieldError]:
    return exc.errors or [FieldError("", exc.detail)]


def _moment(value: datetime) -> str:
    if value.time() == time(0):
        return value.strftime("%d %B %Y")
    return value.strftime("%d %B %Y %H:%M UTC")


def describe_query(query: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """A search's filters in words: (label, value) pairs, in the search form's order."""
    if not query:
        return []
    try:
        parsed = parse_query({k: v for k, v in query.items() if k in PARAMETERS})
    except BadRequestError:
        parsed = None
    rows = []
    for name in PARAMETERS:
        raw = query.get(name)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        text = str(raw).strip()
        if parsed is not None:
            if name == "caller_number" and parsed.caller_number != text:
                text = f"{text} (matched as {parsed.caller_number})"
            elif name == "channel":
                text = "Calls only" if parsed.channel == Channel.CALL else "Chats only"
            elif name == "from" and parsed.from_ is not None:
                text = _moment(parsed.from_)
            elif name == "to" and parsed.to is not None:
                text = _moment(parsed.to)
            elif name == "held":
                text = "Under a legal hold" if parsed.held else "Not held"
        rows.append((FILTER_LABELS.get(name, name), text))
    return rows


def selected_ids(form: MultiMapping[Any]) -> tuple[list[uuid.UUID], bool]:
    """The item ids a form sent as ``item_id`` (once each), and whether any was not an id."""
    ids: list[uuid.UUID] = []
    bad = False
    for raw in form.getall("item_id", []):
        item_id = parse_uuid(raw) if isinstance(raw, str) else None
        if item_id is None:
            bad = True
        elif item_id not in ids:
            ids.append(item_id)
    return ids, bad


def actor(request: web.Request) -> Actor:
    who = principal(request)
    return Actor(who.actor, who.role.value)


# -- placing a hold ---------------------------------------------------------------------------

def _query_from(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The hold's query from search parameters (``prefix`` "query." in the place form): the
    filters a hold may use, without empty ones."""
    query = {}
    for name in QUERY_FIELDS:
        value = params.get(prefix + name)
        if isinstance(value, str) and value.strip():
            query[name] = value.strip()
    return query


def _refused_filters(params: Mapping[str, Any]) -> list[FieldError]:
    """The search's filters that a hold may not use (the search form always sends
    ``status=active``, the default, which is no filter)."""
    errors = []
    for name in NOT_FOR_HOLDS:
        value = params.get(name)
        if not isinstance(value, str) or not value.strip():
            continue
        if name == "status" and value.strip() == "active":
            continue
        errors.append(FieldError(f"query.{name}", "may not be used in a hold: a hold selects "
                                 "contacts, not their current state; search again without it"))
    return errors


def _new_hold(request: web.Request, *, status: int, kind: str, errors: list[FieldError],
              query: Mapping[str, str] | None = None, items: list[Any] | None = None,
              case_ref: str = "", reason: str = "", placeable: bool = True) -> web.Response:
    """The new-hold page; ``placeable`` False when what was chosen cannot be held (the form
    is then not offered)."""
    query = dict(query or {})
    return render(
        "holds_new.html", request, status=status, kind=kind, query=query,
        described=describe_query(query), items=items or [],
        errors=summary(errors, {"case_ref": "case_ref", "reason": "reason"}),
        placeable=placeable,
        values={"case_ref": case_ref, "reason": reason},
        back="/search?" + urlencode({"search": "1", **query}) if query else "/search")


@page(HOLDERS)
async def new_hold_form(request: web.Request) -> web.StreamResponse:
    """Hold everything matching a search: its filters in words, then case reference and
    reason (GET /holds/new?<the search's filters>)."""
    params = request.query
    query = _query_from(params)
    errors = _refused_filters(params) or holds.check_query(query)
    return _new_hold(request, status=400 if errors else 200, kind="query", query=query,
                     errors=errors, placeable=not errors)


@page(HOLDERS)
async def new_hold_selected(request: web.Request) -> web.StreamResponse:
    """Hold the items selected in the search results (POST /holds/new with ``item_id``s)."""
    ids, bad = selected_ids(await request.post())
    items = await find_items(request.app[ARCHIVE], principal(request).tenant, ids)
    if bad or len(items) != len(ids):
        errors = [FieldError("item_ids", "include one that is not an item of yours: "
                             "search again and select the items")]
    elif not items:
        errors = [FieldError("item_ids", "are not selected: select at least one item in the "
                             "search results")]
    else:
        errors = []
    return _new_hold(request, status=400 if errors else 200, kind="items", items=items,
                     errors=errors, placeable=not errors)


@page(HOLDERS)
async def place(request: web.Request) -> web.StreamResponse:
    """Place the hold of the new-hold form; to the hold's page, or the form again with its
    errors (400, nothing placed)."""
    form = await request.post()
    case_ref, reason = form_value(form, "case_ref"), form_value(form, "reason")
    archive = request.app[ARCHIVE]
    tenant = principal(request).tenant
    kind = form_value(form, "kind")
    query: dict[str, str] | None = None
    item_ids: list[uuid.UUID] | None = None
    items: list[Any] = []
    errors: list[FieldError] = []
    if kind == "items":
        item_ids, bad = selected_ids(form)
        items = await find_items(archive, tenant, item_ids)
        if bad:
            errors.append(FieldError("item_ids", "include one that is not an item id"))
    else:
        kind = "query"
        query = _query_from(form, "query.")
    named = {e.field for e in errors}
    errors += [e for e in holds.check_placement(case_ref, reason, item_ids, query)
               if e.field not in named]
    if not errors:
        try:
            placed = await holds.place_hold(archive, tenant=tenant, actor=actor(request),
                                            case_ref=case_ref, reason=reason,
                                            item_ids=item_ids, query=query)
        except BadRequestError as exc:
            errors = errors_of(exc)
        else:
            outcome = {"placed": str(placed.item_count)}
            if placed.already_destroyed:
                outcome["destroyed"] = str(len(placed.already_destroyed))
            raise web.HTTPSeeOther(f"/holds/{placed.hold.id}?{urlencode(outcome)}")
    return _new_hold(request, status=400, kind=kind, query=query, items=items, errors=errors,
                     case_ref=case_ref, reason=reason)


# -- listing, reading and releasing -----------------------------------------------------------

@page(HOLDERS)
async def list_page(request: web.Request) -> web.StreamResponse:
    params = request.query
    status = params.get("status", "").strip() or None
    case_ref = params.get("case_ref", "").strip() or None
    cursor = params.get("cursor", "").strip() or None
    asked = {k: v for k, v in (("status", status), ("case_ref", case_ref)) if v}
    try:
        found = await holds.list_holds(request.app[ARCHIVE], principal(request).tenant,
                                       status=status, case_ref=case_ref, limit=LIST_PAGE,
                                       cursor=cursor)
    except BadRequestError as exc:
        return render("holds.html", request, status=400, asked=asked, holds=[],
                      next_query=None, errors=summary(errors_of(exc), {
                          "status": "f-status", "case_ref": "f-case_ref"}))
    await record(request, "hold.list", None, {"count": len(found.holds), "page": True})
    next_query = (urlencode({**asked, "cursor": found.next_cursor})
                  if found.next_cursor else None)
    return render("holds.html", request, asked=asked, holds=found.holds, errors=[],
                  next_query=next_query, statuses=holds.STATUSES)


def _hold_id(request: web.Request) -> uuid.UUID:
    hold_id = parse_uuid(request.match_info["hold_id"])
    if hold_id is None:
        raise NotFoundError(f"no hold {request.match_info['hold_id']!r}")
    return hold_id


async def _hold_page(request: web.Request, *, status: int = 200,
                     errors: list[FieldError] | None = None,
                     reason: str = "") -> web.Response:
    try:
        hold_id = _hold_id(request)
        cursor = request.query.get("cursor", "").strip() or None
        detail = await holds.get_hold(request.app[ARCHIVE], principal(request).tenant,
                                      hold_id, limit=ITEMS_PAGE, cursor=cursor)
    except (NotFoundError, BadRequestError) as exc:
        return error_page(request, exc)
    await record(request, "hold.view", None,
                 {"hold_id": str(hold_id), "items": len(detail.items), "page": True})
    return render(
        "hold.html", request, status=status, hold=detail.hold, item_count=detail.item_count,
        items=detail.items, described=describe_query(detail.hold.query),
        next_query=urlencode({"cursor": detail.next_cursor}) if detail.next_cursor else None,
        placed=request.query.get("placed"), destroyed=request.query.get("destroyed"),
        released=request.query.get("released") == "1", reason=reason,
        errors=summary(errors or [], {"reason": "reason"}))


@page(HOLDERS)
async def hold_page(request: web.Request) -> web.StreamResponse:
    return await _hold_page(request)


@page(HOLDERS)
async def release(request: web.Request) -> web.StreamResponse:
    """Release the hold with the form's reason; back to the hold's page, or the page again
    with an error summary (400 for a blank reason, 409 if already released)."""
    form = await request.post()
    reason = form_value(form, "reason")
    try:
        hold_id = _hold_id(request)
        await holds.release_hold(request.app[ARCHIVE], tenant=principal(request).tenant,
                                 actor=actor(request), hold_id=hold_id, reason=reason)
    except NotFoundError as exc:
        return error_page(request, exc)
    except (BadRequestError, ConflictError) as exc:
        return await _hold_page(request, status=exc.status, errors=errors_of(exc),
                                reason=reason)
    raise web.HTTPSeeOther(f"/holds/{hold_id}?released=1")


PAGES: list[PageRoute] = [
    ("GET", "/holds", list_page, "page_holds"),
    ("GET", "/holds/new", new_hold_form, "page_hold_new"),
    ("POST", "/holds/new", new_hold_selected, "page_hold_selected"),
    ("POST", "/holds", place, "page_hold_place"),
    ("GET", "/holds/{hold_id}", hold_page, "page_hold"),
    ("POST", "/holds/{hold_id}/release", release, "page_hold_release"),
]
