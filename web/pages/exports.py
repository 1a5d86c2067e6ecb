"""The exports pages: the tenant's exports, a new evidence bundle (of a complaint case's held
items, or of the items selected in a search), an export's record and its download link.

They call ``archive.exports`` and the API's role rules (web/views/exports.py): complaints staff
and administrators make evidence exports and read every export; the data protection team reads
(and downloads) only the subject-access exports it makes through the rights routes, so it is
shown those only and no "new export" form. The download link is the API's
``GET /v1/exports/{id}/bundle.zip`` (the session cookie works for API reads), which audits the
download (``export.download`` and ``item.export`` per item) as for any other client.
"""

import uuid
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from archive import exports
from archive.errors import BadRequestError, FieldError, ForbiddenError, NotFoundError
from archive.models import Role
from web.endpoint import READERS
from web.keys import ARCHIVE, principal
from web.pages.holds import actor, describe_query, errors_of, selected_ids, summary
from web.pages.render import EXPORTERS, error_page, form_value, render
from web.pages.session import PageRoute, page
from web.views.exports import DOWNLOADERS, MAKERS, readable_export

LIST_PAGE = 50
_ANCHORS = {"case_ref": "case_ref", "purpose": "purpose"}


def _kinds(role: Role) -> tuple[str, ...] | None:
    """The kinds of export the role may read (as ``readable_export`` allows)."""
    return (exports.SUBJECT_ACCESS,) if role == Role.PRIVACY else None


async def _list(request: web.Request, *, status: int = 200,
                errors: list[FieldError] | None = None,
                values: dict[str, str] | None = None) -> web.Response:
    who = principal(request)
    cursor = request.query.get("cursor", "").strip() or None
    try:
        found = await exports.list_exports(request.app[ARCHIVE], who.tenant,
                                           kinds=_kinds(who.role), limit=LIST_PAGE,
                                           cursor=cursor)
    except BadRequestError as exc:
        return error_page(request, exc)
    case_ref = request.query.get("case_ref", "").strip()
    return render(
        "exports.html", request, status=status, exports=found.exports,
        next_query=urlencode({"cursor": found.next_cursor}) if found.next_cursor else None,
        can_make=who.role in MAKERS, errors=summary(errors or [], _ANCHORS),
        values=values or {"case_ref": case_ref, "purpose": ""})


@page(EXPORTERS)
async def list_page(request: web.Request) -> web.StreamResponse:
    return await _list(request)


def _new(request: web.Request, *, status: int, items: list[Any],
         errors: list[FieldError], purpose: str = "") -> web.Response:
    return render("export_new.html", request, status=status, items=items,
                  errors=summary(errors, _ANCHORS), purpose=purpose)


@page(MAKERS)
async def new_selected(request: web.Request) -> web.StreamResponse:
    """Export the items selected in the search results (POST /exports/new with
    ``item_id``s): the items, and the purpose to give."""
    ids, bad = selected_ids(await request.post())
    items = await exports.find_items(request.app[ARCHIVE], principal(request).tenant, ids)
    errors: list[FieldError] = []
    if bad or len(items) != len(ids):
        errors.append(FieldError("item_ids", "include one that is not an item of yours: "
                                 "search again and select the items"))
    elif not items:
        errors.append(FieldError("item_ids", "are not selected: select at least one item in "
                                 "the search results"))
    return _new(request, status=400 if errors else 200, items=items, errors=errors)


@page(MAKERS)
async def create(request: web.Request) -> web.StreamResponse:
    """Make an evidence export of the form's case reference or selected items; to its page,
    or the form again with its errors (400, nothing made)."""
    form = await request.post()
    purpose = form_value(form, "purpose")
    archive = request.app[ARCHIVE]
    tenant = principal(request).tenant
    by_items = form_value(form, "kind") == "items"
    item_ids: list[uuid.UUID] | None = None
    case_ref: str | None = None
    items: list[Any] = []
    errors: list[FieldError] = []
    if by_items:
        item_ids, bad = selected_ids(form)
        items = await exports.find_items(archive, tenant, item_ids)
        if bad:
            errors.append(FieldError("item_ids", "include one that is not an item id"))
    else:
        case_ref = form_value(form, "case_ref")
        if not case_ref:
            errors.append(FieldError("case_ref", "is required: the complaint case whose held "
                                     "items to export"))
    named = {e.field for e in errors}
    errors += [e for e in exports.check_request(purpose, item_ids, case_ref, None)
               if e.field not in named]
    if not errors:
        try:
            export = await exports.create_export(
                archive, tenant=tenant, actor=actor(request), kind=exports.EVIDENCE,
                purpose=purpose, item_ids=item_ids, case_ref=case_ref)
        except BadRequestError as exc:
            errors = errors_of(exc)
        else:
            raise web.HTTPSeeOther(f"/exports/{export.id}?made=1")
    if by_items:
        return _new(request, status=400, items=items, errors=errors, purpose=purpose)
    return await _list(request, status=400, errors=errors,
                       values={"case_ref": case_ref or "", "purpose": purpose})


@page(EXPORTERS)
async def export_page(request: web.Request) -> web.StreamResponse:
    try:
        export = await readable_export(request)
    except (NotFoundError, ForbiddenError) as exc:
        return error_page(request, exc)
    who = principal(request)
    items = await exports.find_items(request.app[ARCHIVE], who.tenant,
                                     [uuid.UUID(i) for i in export.item_ids])
    return render("export.html", request, export=export, items=items,
                  described=describe_query(export.query), made=request.query.get("made") == "1",
                  can_read_items=who.role in READERS, can_download=who.role in DOWNLOADERS,
                  download=f"/v1/exports/{export.id}/bundle.zip")


PAGES: list[PageRoute] = [
    ("GET", "/exports", list_page, "page_exports"),
    ("POST", "/exports/new", new_selected, "page_export_selected"),
    ("POST", "/exports", create, "page_export_create"),
    ("GET", "/exports/{export_id}", export_page, "page_export"),
]
