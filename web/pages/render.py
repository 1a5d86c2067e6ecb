"""What every page template is given: who is signed in, the form token, and the menu the role
may use (pages a role may not open are not offered)."""

from collections.abc import Mapping
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from archive.errors import ArchiveError
from archive.models import Role
from web.endpoint import ADMINS, READERS
from web.keys import PRINCIPAL
from web.pages.session import SESSION
from web.views import audit, exports, holds, quality

ROLE_NAMES = {Role.COMPLAINTS: "Complaints", Role.QUALITY: "Quality monitoring",
              Role.ADMIN: "Administrator", Role.AUDITOR: "Auditor",
              Role.PRIVACY: "Data protection", Role.INGEST: "Ingest system"}

# The pages' role sets are the API's: a page offers what its routes allow.
HOLDERS = holds.MAKERS
EXPORTERS = exports.DOWNLOADERS
MONITORS = quality.MONITORS
AUDITORS = audit.AUDITORS

# The menu: label, path, the roles that see it. Each page's guard uses the same role set.
MENU: tuple[tuple[str, str, frozenset[Role]], ...] = (
    ("Search", "/search", READERS),
    ("Holds", "/holds", HOLDERS),
    ("Exports", "/exports", EXPORTERS),
    ("Quality", "/quality", MONITORS),
    ("Lifecycle", "/lifecycle", ADMINS),
    ("Audit", "/audit", AUDITORS),
)


def context(request: web.Request, **values: Any) -> dict[str, Any]:
    who = request.get(PRINCIPAL)
    session = request.get(SESSION)
    menu = [(label, path) for label, path, roles in MENU if who and who.role in roles]
    return {"who": who, "role_name": ROLE_NAMES.get(who.role) if who else None,
            "csrf": session.csrf if session else "", "can_search": bool(who and
            who.role in READERS), "menu": menu, "here": request.path, **values}


def render(template: str, request: web.Request, *, status: int = 200,
           **values: Any) -> web.Response:
    return aiohttp_jinja2.render_template(template, request, context(request, **values),
                                          status=status)


def error_page(request: web.Request, exc: ArchiveError) -> web.Response:
    """An archive error (not found, forbidden, conflict) as a page with its status."""
    return render("error.html", request, status=exc.status, title=exc.title, detail=exc.detail)


def field_errors(exc: ArchiveError,
                 anchors: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """An error's fields for a form: ``field`` and ``message`` (shown beside the input) and
    the error summary's ``text`` and ``href`` (``anchors``: field name -> id of its input;
    a field without one is listed unlinked). An error naming no field is one row."""
    if not exc.errors:
        return [{"field": "", "message": exc.detail, "text": exc.detail, "href": ""}]
    anchors = anchors or {}
    return [{"field": e.field, "message": e.message,
             "text": f"{e.field}: {e.message}" if e.field else e.message,
             "href": f"#{anchors[e.field]}" if e.field in anchors else ""} for e in exc.errors]


def form_value(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""
