"""Retention policies over HTTP: read the windows in force, preview a change, apply it with the
preview's token (lifecycle/policies.py does the work). Admins only; the token fixes the tenant.

``PUT /v1/policies`` without ``confirm`` changes nothing and answers the preview with a token;
the same body with that ``confirm`` applies it, unless the policy changed in between (409).
"""

from typing import Any

from aiohttp import web

from archive.errors import BadRequestError, FieldError
from archive.models import Channel
from archive.retention import MAX_DAYS
from archive.service import Actor
from lifecycle.policies import apply_change, list_policies, plan_change
from web.endpoint import ADMINS, Endpoint, json_answer, json_body, ref
from web.keys import ARCHIVE, principal

_FIELDS = ("channel", "days", "reason", "confirm")
MAX_REASON = 2000


async def get_policies(request: web.Request) -> web.Response:
    who = principal(request)
    views = await list_policies(request.app[ARCHIVE], who.tenant)
    return web.json_response({"tenant": who.tenant, "policies": [v.json() for v in views]})


def _parse_change(body: dict[str, Any]) -> tuple[Channel, int, str | None, str | None]:
    """channel, days, reason, confirm from the body; every bad field named at once."""
    errors = [FieldError(k, "is not a known field") for k in sorted(set(body) - set(_FIELDS))]
    channel = body.get("channel")
    if channel is None:
        errors.append(FieldError("channel", "is required"))
    elif channel not in {c.value for c in Channel}:
        errors.append(FieldError("channel", "must be call or chat"))
    days = body.get("days")
    if days is None:
        errors.append(FieldError("days", "is required"))
    elif isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        errors.append(FieldError("days", f"must be a whole number from 1 to {MAX_DAYS}"))
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        errors.append(FieldError("reason", "must be a string"))
    elif reason is not None and len(reason) > MAX_REASON:
        errors.append(FieldError("reason", f"must be at most {MAX_REASON} characters"))
    confirm = body.get("confirm")
    if confirm is not None and not isinstance(confirm, str):
        errors.append(FieldError("confirm", "must be a string (the token of a preview)"))
    if errors:
        raise BadRequestError("the policy change has errors", errors=errors)
    assert isinstance(channel, str) and isinstance(days, int)
    return Channel(channel), days, (reason.strip() or None) if reason else None, confirm


async def put_policy(request: web.Request) -> web.Response:
    who = principal(request)
    archive = request.app[ARCHIVE]
    channel, days, reason, confirm = _parse_change(await json_body(request))
    if confirm is None:
        plan = await plan_change(archive, who.tenant, channel, days)
        return web.json_response({"applied": False, "preview": plan.json(),
                                  "confirm": plan.confirm})
    result = await apply_change(archive, tenant=who.tenant, channel=channel, days=days,
                                actor=Actor(who.actor, who.role.value), source="api",
                                reason=reason, confirm=confirm)
    return web.json_response({"applied": True, "policy": result.json(),
                              "recomputed": result.recomputed})


_TIME = {"type": "string", "format": "date-time"}
_NTIME = {"type": ["string", "null"], "format": "date-time"}
_NSTR = {"type": ["string", "null"]}
_CHANNEL = {"enum": [c.value for c in Channel]}
_DAYS = {"type": "integer", "minimum": 1, "maximum": MAX_DAYS}
_CONFLICT = {"$ref": "#/components/responses/Conflict"}
_BAD = {"$ref": "#/components/responses/BadRequest"}

ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/v1/policies", get_policies, "get_policies",
             "Show the tenant's retention windows in force, with their versions", ADMINS,
             {"responses": {"200": json_answer(ref("PolicyList"),
                                               "The window of each channel")}}),
    Endpoint("PUT", "/v1/policies", put_policy, "put_policy",
             "Preview a new retention window, or apply a previewed one", ADMINS,
             {"requestBody": {"required": True, "content": {"application/json": {
                 "schema": ref("PolicyChange")}}},
              "responses": {
                  "200": json_answer(ref("PolicyChangeAnswer"),
                                     "Without confirm: the preview and its token (nothing "
                                     "changed). With it: the new version"),
                  "400": _BAD,
                  "409": {**_CONFLICT, "description": "The policy changed since the preview, "
                          "or the settings file fixes this window"}}}),
]

_VERSION = {
    "type": "object", "required": ["version", "days", "source", "set_by", "set_at"],
    "properties": {"version": {"type": "integer", "minimum": 1}, "days": _DAYS,
                   "source": {"enum": ["api", "cli", "settings"]}, "set_by": {"type": "string"},
                   "set_at": _TIME, "reason": _NSTR},
}

SCHEMAS: dict[str, Any] = {
    "Policy": {
        "type": "object",
        "required": ["tenant", "channel", "days", "version", "source", "policy",
                     "fixed_by_settings", "history"],
        "properties": {
            "tenant": {"type": "string"}, "channel": _CHANNEL, "days": _DAYS,
            "version": {"type": "integer", "minimum": 0,
                        "description": "0: no version set; the settings file's or the "
                                       "built-in window applies"},
            "source": {"enum": ["api", "cli", "settings", "default"]},
            "set_by": _NSTR, "set_at": _NTIME, "reason": _NSTR,
            "policy": {"type": "string", "description": "The basis name items record "
                                                        "(tenant/channel, settings or default)"},
            "fixed_by_settings": {"type": "boolean",
                                  "description": "The settings file (retention_days) decides "
                                                 "this window; the API may not change it"},
            "history": {"type": "array", "items": _VERSION, "description": "Oldest first"},
        },
    },
    "PolicyList": {
        "type": "object", "required": ["tenant", "policies"],
        "properties": {"tenant": {"type": "string"},
                       "policies": {"type": "array", "items": ref("Policy")}},
    },
    "PolicyChange": {
        "type": "object", "required": ["channel", "days"], "additionalProperties": False,
        "properties": {
            "channel": _CHANNEL, "days": _DAYS,
            "reason": {"type": "string", "maxLength": MAX_REASON,
                       "description": "Why; kept with the version (not in the audit log)"},
            "confirm": {"type": "string",
                        "description": "The token of a preview of this same change"},
        },
    },
    "PolicyChangeAnswer": {
        "type": "object", "required": ["applied"],
        "properties": {
            "applied": {"type": "boolean"},
            "confirm": {"type": "string", "description": "Send back to apply (preview only)"},
            "preview": {
                "type": "object",
                "properties": {
                    "tenant": {"type": "string"}, "channel": _CHANNEL, "days": _DAYS,
                    "current_days": _DAYS, "current_version": {"type": "integer"},
                    "current_source": {"type": "string"}, "now": _TIME,
                    "recomputed": {"type": "integer", "description":
                                   "Active items that get a new retain_until"},
                    "expire_now": {"type": "integer", "description":
                                   "Of those, expired at once (new retain_until <= now)"},
                    "expire_now_held": {"type": "integer",
                                        "description": "Of those, kept by legal holds"},
                    "expire_now_unheld": {"type": "integer", "description":
                                          "Of those, destroyed by the next purge pass"},
                    "earliest_retain_until": _NTIME,
                }},
            "policy": {"type": "object", "properties": {
                "tenant": {"type": "string"}, "channel": _CHANNEL, "days": _DAYS,
                "version": {"type": "integer"}, "source": {"type": "string"},
                "set_by": {"type": "string"}, "set_at": _TIME, "reason": _NSTR,
                "policy": {"type": "string"}, "previous_days": _DAYS}},
            "recomputed": {"type": "integer",
                           "description": "Active items whose retain_until was recomputed"},
        },
    },
}
