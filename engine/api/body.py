"""Reading JSON request bodies, with errors that name the problem (never a 500).

orjson, not the standard library: it refuses what the engine could not store or send on
(lone UTF-16 surrogates such as "\\ud800", NaN and Infinity, nesting deeper than 1,024), and it
has no int-digit limit to trip over (the standard parser raises a bare ValueError past 4,300).
"""

from typing import Any

import orjson
import structlog
from aiohttp import web

from engine.errors import ClientGone, IngestError

log = structlog.get_logger(__name__)


async def json_body(request: web.Request, *, required: bool) -> Any:
    body = await read_body(request)
    if not body.strip():
        if required:
            raise IngestError("empty body: expected JSON", status=400)
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = "nested too deeply (over 1,024 levels)" if "depth limit" in str(exc) else str(exc)
        raise IngestError(f"body is not valid JSON: {reason}", status=400) from None


async def read_body(request: web.Request) -> bytes:
    """The body, decompressed as its Content-Encoding says; over client_max_size: 413."""
    try:
        return await request.read()
    except web.RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a body that is not
        reason = " ".join(str(exc.__cause__ or exc).split())
        encoding = request.headers.get("Content-Encoding")
        what = f"body does not decompress as {encoding}" if encoding else "body could not be read"
        raise IngestError(f"{what}: {reason}", status=400) from None
    except ConnectionResetError as exc:  # aiohttp's "Connection lost" while reading the body
        raise ClientGone(str(exc)) from None
