"""Reading items (more of retrieval comes with the retrieval issue)."""

import uuid
from typing import Any

from aiohttp import web

from archive import audit
from archive.errors import ForbiddenError, NotFoundError
from archive.ids import parse_uuid
from archive.models import Channel, Item, Role
from web.keys import ARCHIVE, DATABASE, principal


def item_json(item: Item, holds: list[str], role: Role | None = None) -> dict[str, Any]:
    """The public view of an item: metadata, media facts, retention and holds. For a quality
    monitor (``role``) the customer's name, email and postcode are withheld (null): monitors
    review how a call was handled, not who made it."""
    customer = {"name": item.customer_name, "email": item.customer_email,
                "postcode": item.customer_postcode}
    if role == Role.QUALITY:
        customer = dict.fromkeys(customer)
    return {
        "id": str(item.id),
        "tenant": item.tenant,
        "channel": item.channel,
        "external_id": item.external_id,
        "status": item.status,
        "started_at": item.started_at.isoformat(),
        "ended_at": item.ended_at.isoformat() if item.ended_at else None,
        "duration": item.duration,
        "direction": item.direction,
        "caller_number": item.caller_number,
        "called_number": item.called_number,
        "agent_id": item.agent_id,
        "agent_extension": item.agent_extension,
        "service": item.service,
        "queue": item.queue,
        "customer": customer,
        "special_category": item.special_category,
        "tags": item.tags or [],
        "media": {"type": item.media_type, "size": item.plain_size, "sha256": item.sha256,
                  **(item.media or {})},
        "retention": {"retain_until": item.retain_until.isoformat() if item.retain_until
                      else None, "basis": item.retention_basis},
        "holds": holds,
        "created_at": item.created_at.isoformat(),
    }


async def readable_item(request: web.Request) -> Item:
    """The item named by the path's ``item_id``, if the caller's tenant has it and their role
    may read it (quality monitors: calls only); 404/403 otherwise. Destroyed items are
    returned too (their record, without content): callers that serve content check status."""
    who = principal(request)
    item_id = parse_uuid(request.match_info["item_id"])
    if item_id is None:
        raise NotFoundError(f"no item {request.match_info['item_id']!r}")
    item = await request.app[ARCHIVE].get(who.tenant, item_id)
    if who.role == Role.QUALITY and item.channel != Channel.CALL.value:
        raise ForbiddenError("quality monitors may read calls only")
    return item


def purpose(request: web.Request) -> str:
    """The caller's stated purpose (``X-Purpose``), cut to 200 characters, for the audit log."""
    return request.headers.get("X-Purpose", "")[:200]


async def record(request: web.Request, action: str, item_id: uuid.UUID | None = None,
                 detail: dict[str, Any] | None = None) -> None:
    """Append an audit event for the caller (with their stated purpose) in its own
    transaction. ``detail`` must hold no personal data."""
    who = principal(request)
    archive = request.app[ARCHIVE]
    async with request.app[DATABASE].session() as session:
        await audit.append(session, tenant=who.tenant, at=archive.clock.now(), actor=who.actor,
                           role=who.role.value, action=action, item_id=item_id,
                           detail={"purpose": purpose(request), **(detail or {})})
        await session.commit()


async def get_item(request: web.Request) -> web.Response:
    item = await readable_item(request)
    holds = await request.app[ARCHIVE].active_holds(item.tenant, item.id)
    await record(request, "item.view", item.id)
    return web.json_response(item_json(item, holds, principal(request).role))
