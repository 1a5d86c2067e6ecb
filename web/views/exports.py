"""Routes of this area are listed here and registered by web/routes.py."""

from typing import Any

from web.endpoint import Endpoint

ENDPOINTS: list[Endpoint] = []
SCHEMAS: dict[str, Any] = {}
