"""The audit log over HTTP: list a tenant's events with filters, and verify its hash chain
(archive/audit.py does the work). Auditors and admins only; the token fixes the tenant.

Reading the log is itself recorded (``audit.list``, ``audit.verify``), with the names of the
filters used and counts, never their values.
"""

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from archive import audit
from archive.errors import BadRequestError, FieldError
from archive.models import Role
from web.endpoint import Endpoint, json_answer, ref
from web.keys import DATABASE, principal
from web.views.items import record

AUDITORS = frozenset({Role.AUDITOR, Role.ADMIN})
MAX_PROBLEMS = 100  # a verification answer lists at most this many breaks


@dataclass(frozen=True)
class Verification:
    """A tenant chain's verification, as the API and the audit page show it."""

    tenant: str
    events: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "ok": self.ok, "events": self.events,
                "first_problem": self.problems[0] if self.problems else None,
                "problem_count": len(self.problems), "problems": self.problems[:MAX_PROBLEMS]}


async def find_events(request: web.Request) -> tuple[audit.EventQuery, audit.EventPage]:
    """The page of events the request's query asks for (400 naming each bad filter), and the
    reader's own ``audit.list`` event: what the API and the audit page both call."""
    repeated = [FieldError(k, "is given more than once") for k in sorted(set(request.query))
                if len(request.query.getall(k)) > 1]
    if repeated:  # a repeated filter is ambiguous
        raise BadRequestError("the audit filters have errors", errors=repeated)
    query = audit.parse_event_query(request.query)
    async with request.app[DATABASE].reader() as session:
        page = await audit.list_events(session, principal(request).tenant, query)
    await record(request, "audit.list", None,
                 {"filters": query.filter_names(), "count": len(page.events)})
    return query, page


async def verify_chain(request: web.Request) -> Verification:
    """Verify the caller's tenant's chain and record that it was checked."""
    tenant = principal(request).tenant
    async with request.app[DATABASE].reader() as session:
        report = await audit.verify_tenant(session, tenant)
    await record(request, "audit.verify", None, {"events": report.events, "ok": report.ok})
    return Verification(tenant, report.events, list(report.problems))


async def list_audit_events(request: web.Request) -> web.Response:
    _, page = await find_events(request)
    return web.json_response({"events": [audit.event_json(e) for e in page.events],
                              "next_cursor": page.next_cursor})


async def get_audit_verify(request: web.Request) -> web.Response:
    if request.query:
        raise BadRequestError("the verification takes no parameters", errors=[
            FieldError(k, "is not a known parameter") for k in sorted(set(request.query))])
    return web.json_response((await verify_chain(request)).json())


# -- OpenAPI -----------------------------------------------------------------------------------

def _param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_BAD = {"$ref": "#/components/responses/BadRequest"}
_TIME = {"type": "string", "format": "date-time"}
_MOMENT = {"type": "string", "description": "A date (midnight UTC) or ISO 8601 with an offset"}

ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/v1/audit/events", list_audit_events, "list_audit_events",
             "List the tenant's audit events, newest first", AUDITORS,
             {"parameters": [
                 _param("action", {"type": "string", "maxLength": 50},
                        "An action (item.view), or a prefix ending in a dot (item.)"),
                 _param("actor", {"type": "string", "maxLength": 100},
                        "Who acted, as recorded: token:ID, user:ID, cli, settings..."),
                 _param("item_id", {"type": "string", "format": "uuid"},
                        "Only the events of this item"),
                 _param("from", _MOMENT, "Events at or after"),
                 _param("to", _MOMENT, "Events before"),
                 _param("limit", {"type": "integer", "minimum": 1,
                                  "maximum": audit.EVENTS_MAX_LIMIT,
                                  "default": audit.EVENTS_DEFAULT_LIMIT}, "Events per page"),
                 _param("cursor", {"type": "string"}, "next_cursor of the previous page")],
              "responses": {"200": json_answer(ref("AuditEventList"), "A page of events"),
                            "400": _BAD}}),
    Endpoint("GET", "/v1/audit/verify", get_audit_verify, "get_audit_verify",
             "Verify the tenant's audit hash chain", AUDITORS,
             {"responses": {"200": json_answer(ref("AuditVerification"),
                                               "Intact, or where the chain breaks"),
                            "400": _BAD}}),
]

SCHEMAS: dict[str, Any] = {
    "AuditEvent": {
        "type": "object",
        "required": ["seq", "at", "actor", "role", "action", "item_id", "detail", "hash"],
        "properties": {
            "seq": {"type": "integer", "minimum": 1,
                    "description": "Position in the tenant's chain"},
            "at": _TIME,
            "actor": {"type": "string"},
            "role": {"type": "string"},
            "action": {"type": "string"},
            "item_id": {"type": ["string", "null"], "format": "uuid"},
            "detail": {"type": ["object", "null"],
                       "description": "Counts, ids and references; never personal data"},
            "hash": {"type": "string", "description": "SHA-256 of the event and the hash of "
                                                      "the one before it"},
        },
    },
    "AuditEventList": {
        "type": "object", "required": ["events", "next_cursor"],
        "properties": {"events": {"type": "array", "items": ref("AuditEvent")},
                       "next_cursor": {"type": ["string", "null"],
                                       "description": "null on the last page"}},
    },
    "AuditVerification": {
        "type": "object",
        "required": ["tenant", "ok", "events", "first_problem", "problem_count", "problems"],
        "properties": {
            "tenant": {"type": "string"},
            "ok": {"type": "boolean", "description": "The chain is intact"},
            "events": {"type": "integer", "minimum": 0, "description": "Events checked"},
            "first_problem": {"type": ["string", "null"],
                              "description": "Where the chain first breaks"},
            "problem_count": {"type": "integer", "minimum": 0},
            "problems": {"type": "array", "items": {"type": "string"},
                         "maxItems": MAX_PROBLEMS, "description": "The breaks, in order"},
        },
    },
}
