"""The audit page (auditors and administrators): the tenant's audit log with the filters of
``GET /v1/audit/events``, newest first and paged, under the verification of its hash chain.

It calls what the API calls (web.views.audit: archive/audit.py underneath), so reading the log
from the page leaves the same ``audit.list`` and ``audit.verify`` events. Items are linked only
for roles that may open them; an auditor sees their ids as text.
"""

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from archive.audit import EVENT_FILTERS, EventPage
from archive.errors import BadRequestError
from web.endpoint import READERS
from web.keys import principal
from web.pages.render import AUDITORS, field_errors, render
from web.pages.session import PageRoute, page
from web.views.audit import find_events, verify_chain


def detail_text(detail: dict[str, Any] | None) -> str:
    """An event's detail as ``name: value`` pairs (lists joined, empty values left out)."""
    parts = []
    for name, value in sorted((detail or {}).items()):
        if value is None or value in ("", [], {}):
            continue
        if isinstance(value, bool):
            shown = "yes" if value else "no"
        elif isinstance(value, list):
            shown = ", ".join(map(str, value))
        else:
            shown = str(value)
        parts.append(f"{name.replace('_', ' ')}: {shown}")
    return "; ".join(parts)


@page(AUDITORS)
async def audit_page(request: web.Request) -> web.StreamResponse:
    asked = {k: v for k, v in request.query.items() if k in EVENT_FILTERS and v.strip()}
    errors: list[dict[str, str]] = []
    found = EventPage([], None)
    status = 200
    try:
        _, found = await find_events(request)
    except BadRequestError as exc:
        status, errors = exc.status, field_errors(exc, {f: f"f-{f}" for f in EVENT_FILTERS})
    chain = await verify_chain(request)
    keep = {k: v for k, v in request.query.items() if k in {*EVENT_FILTERS, "limit"}}
    next_query = (urlencode({**keep, "cursor": found.next_cursor})
                  if found.next_cursor else None)
    return render("audit.html", request, status=status, asked=asked, errors=errors,
                  events=[(e, detail_text(e.detail)) for e in found.events], chain=chain,
                  next_query=next_query, paged="cursor" in request.query,
                  link_items=principal(request).role in READERS)


PAGES: list[PageRoute] = [
    ("GET", "/audit", audit_page, "page_audit"),
]
