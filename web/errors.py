"""One middleware turns every error into ``application/problem+json`` (RFC 9457).

Domain errors carry their status, title, detail and the list of bad fields. HTTP errors raised by
aiohttp (no such route, method not allowed, body too large) get the same shape. Anything else is
a 500 whose detail says only that the error was logged under the request id: exception messages
can hold personal data and never reach a client or a log line.
"""

import asyncio
import logging
import traceback
import uuid
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from archive.errors import ArchiveError, FieldError
from web.keys import REQUEST_ID, ROUTE

log = logging.getLogger(__name__)
PROBLEM_TYPE = "application/problem+json"
REQUEST_ID_HEADER = "X-Request-Id"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    request_id: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "detail": detail, "request_id": request_id}
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    response = web.json_response(body, status=status, content_type=PROBLEM_TYPE,
                                 headers=headers)
    response.headers[REQUEST_ID_HEADER] = request_id
    response.headers["X-Content-Type-Options"] = "nosniff"  # a body quoting input is not HTML
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    rid = supplied if 0 < len(supplied) <= 64 and supplied.isprintable() else uuid.uuid4().hex
    request[REQUEST_ID] = rid
    request[ROUTE] = request.match_info.route.name or "-"  # for the access log
    try:
        response = await handler(request)
    except ArchiveError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="archive"'} if exc.status == 401 else None
        return problem(exc.status, exc.title, exc.detail, request_id=rid, errors=exc.errors,
                       headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else (
            exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k in {"Allow", "Content-Range"}}
        return problem(exc.status, exc.reason, detail, request_id=rid, headers=headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:  # noqa: BLE001  (the last resort: every error gets an answer)
        # Where it failed, but not the exception's message: messages can quote personal data.
        where = "".join(traceback.format_tb(exc.__traceback__))
        log.error("unhandled %s in %s %s (request %s)\n%s", type(exc).__name__,  # noqa: TRY400
                  request.method, request[ROUTE], rid, where)
        return problem(500, "Internal error",
                       f"The archive failed to answer; the error is logged as request {rid}.",
                       request_id=rid)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = rid
    return response
