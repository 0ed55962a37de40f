"""Reading JSON request bodies, with errors that name the problem (never a 500)."""

import json
from typing import Any

from aiohttp import web

from engine.errors import IngestError


async def json_body(request: web.Request, *, required: bool) -> Any:
    body = await request.read()  # over client_max_size: HTTPRequestEntityTooLarge -> 413
    if not body.strip():
        if required:
            raise IngestError("empty body: expected JSON", status=400)
        return {}
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IngestError(f"body is not valid JSON: {exc}", status=400) from None
    except RecursionError:
        raise IngestError("body is not valid JSON: nested too deeply", status=400) from None
