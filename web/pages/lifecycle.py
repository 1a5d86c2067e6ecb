"""The lifecycle page (administrators): the retention windows in force, changing one through a
preview and a confirmation, and what the purge will destroy week by week over the next 12 weeks.

It calls the domain code of ``/v1/policies`` and ``/v1/lifecycle/preview`` (lifecycle/policies.py
and lifecycle/preview.py): the same checks, the same ``policy.change`` audit event. A change is
the API's two steps: the preview hands out a confirm token bound to the version in force, and
applying it fails when someone changed the window in between.
"""

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from archive.errors import ArchiveError, BadRequestError, ConflictError, FieldError
from archive.models import Channel
from archive.service import Actor
from lifecycle.policies import PolicyView, apply_change, list_policies, plan_change
from lifecycle.preview import ForecastWeek, PreviewRow, forecast, preview
from web.endpoint import ADMINS
from web.keys import ARCHIVE, CLOCK, DATABASE, principal
from web.pages.render import error_page, field_errors, form_value, render
from web.pages.session import PageRoute, page
from web.views.policies import MAX_REASON

WEEKS = 12
SERIES = ["destroyed", "kept by holds"]
SOURCES = {"api": "Set on this site or through the API", "cli": "Set with the command line",
           "settings": "The settings file", "default": "The built-in default"}
CHANNEL_NAMES = {Channel.CALL: "calls", Channel.CHAT: "chats"}
_DAYS = re.compile(r"^\d{1,7}$")


def _channel(form: Mapping[str, Any], errors: list[FieldError]) -> Channel | None:
    value = form_value(form, "channel")
    if value in {c.value for c in Channel}:
        return Channel(value)
    errors.append(FieldError("channel", "must be call or chat"))
    return None


def _change(form: Mapping[str, Any]) -> tuple[Channel, int, str | None]:
    """channel, days and reason of a change form. The range of days is the domain's rule
    (plan_change and apply_change check it); here only that it is a whole number."""
    errors: list[FieldError] = []
    channel = _channel(form, errors)
    days_text = form_value(form, "days")
    if not _DAYS.match(days_text):
        errors.append(FieldError("days", "must be a whole number of days, for example 365"))
    reason = form_value(form, "reason")
    if len(reason) > MAX_REASON:
        errors.append(FieldError("reason", f"must be at most {MAX_REASON} characters"))
    if errors:
        raise BadRequestError("the change has errors", errors=errors)
    assert channel is not None
    return channel, int(days_text), reason or None


def _week_label(week: ForecastWeek) -> str:
    return f"w/c {week.start.day} {week.start:%b}"


async def _lifecycle(request: web.Request, *, status: int = 200,
                     errors: list[dict[str, str]] | None = None,
                     form: Mapping[str, Any] | None = None) -> web.Response:
    """The page; with ``errors`` (from a change form) and what was typed in ``form``."""
    who = principal(request)
    now = request.app[CLOCK].now()
    db = request.app[DATABASE]
    policies = await list_policies(request.app[ARCHIVE], who.tenant)
    weeks = await forecast(db, tenant=who.tenant, now=now, weeks=WEEKS)
    past = {r.channel: r for r in await preview(db, until=now, now=now, tenant=who.tenant)}
    overdue = [past.get(c.value, PreviewRow(who.tenant, c.value, 0, 0, 0, None))
               for c in Channel]
    rows = [{"label": _week_label(w), "values": [w.would_destroy, w.kept_by_holds]}
            for w in weeks]
    form = form or {}
    typed_channel = form_value(form, "channel")
    return render(
        "lifecycle.html", request, status=status, policies=policies, sources=SOURCES,
        names=CHANNEL_NAMES, rows=rows, series=SERIES, weeks=WEEKS, overdue=overdue,
        total_destroy=sum(w.would_destroy for w in weeks),
        total_kept=sum(w.kept_by_holds for w in weeks),
        total_overdue=sum(r.overdue for r in overdue),
        total_overdue_kept=sum(r.kept_by_holds for r in overdue),
        errors=_linked(errors or [], typed_channel), typed_channel=typed_channel,
        typed={"days": form_value(form, "days"), "reason": form_value(form, "reason")},
        banner=_banner(request, policies), now=now)


def _linked(errors: list[dict[str, str]], channel: str) -> list[dict[str, str]]:
    """Each error with the id of its field in the channel's form (none for a hidden one)."""
    shown = {"days", "reason"}
    return [{**e, "text": e["text"][:1].upper() + e["text"][1:],
             "href": f"#{e['field']}-{channel}" if e["field"] in shown and channel in
             {c.value for c in Channel} else ""} for e in errors]


def _banner(request: web.Request, policies: list[PolicyView]) -> str | None:
    """The success message after a change (the redirect names the channel and the count)."""
    changed, recomputed = request.query.get("changed", ""), request.query.get("recomputed", "")
    view = next((v for v in policies if v.channel.value == changed), None)
    if view is None or not recomputed.isdigit():
        return None
    return (f"The retention window for {CHANNEL_NAMES[view.channel]} is now {view.days} days "
            f"(version {view.version}). The dates of {recomputed} item(s) were recomputed.")


@page(ADMINS)
async def lifecycle_page(request: web.Request) -> web.StreamResponse:
    return await _lifecycle(request)


@page(ADMINS)
async def preview_change(request: web.Request) -> web.StreamResponse:
    """What a change would do, and the button that applies it (nothing is changed here)."""
    form = await request.post()
    try:
        channel, days, reason = _change(form)
        plan = await plan_change(request.app[ARCHIVE], principal(request).tenant, channel, days)
    except (BadRequestError, ConflictError) as exc:
        return await _lifecycle(request, status=exc.status, errors=field_errors(exc),
                                form=form)
    except ArchiveError as exc:
        return error_page(request, exc)
    return render("lifecycle_preview.html", request, plan=plan, reason=reason or "",
                  name=CHANNEL_NAMES[channel])


@page(ADMINS)
async def apply(request: web.Request) -> web.StreamResponse:
    """Apply a previewed change with its confirm token, then back to the page."""
    form = await request.post()
    who = principal(request)
    try:
        channel, days, reason = _change(form)
        result = await apply_change(request.app[ARCHIVE], tenant=who.tenant, channel=channel,
                                    days=days, actor=Actor(who.actor, who.role.value),
                                    source="api", reason=reason,
                                    confirm=form_value(form, "confirm"))
    except (BadRequestError, ConflictError) as exc:
        return await _lifecycle(request, status=exc.status, errors=field_errors(exc),
                                form=form)
    except ArchiveError as exc:
        return error_page(request, exc)
    query = urlencode({"changed": channel.value, "recomputed": result.recomputed})
    raise web.HTTPSeeOther(f"/lifecycle?{query}")


PAGES: list[PageRoute] = [
    ("GET", "/lifecycle", lifecycle_page, "page_lifecycle"),
    ("POST", "/lifecycle/preview", preview_change, "page_lifecycle_preview"),
    ("POST", "/lifecycle/policies", apply, "page_lifecycle_apply"),
]
