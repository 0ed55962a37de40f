"""Reading request bodies: decompressed here (bounded), parsed as JSON, every problem a 4xx.

The HTTP server runs with auto_decompress off (SERVER_ARGS): aiohttp's own deflate decoder
leaves a request hanging on a truncated stream, and answers some bad ones in plain text before
the API sees them. Here a body that does not decompress is a 400, one that inflates past the
body limit a 413 (no zip bombs), and an encoding other than gzip or deflate a 415.

orjson, not the standard library, parses: it refuses what the engine could not store or send on
(lone UTF-16 surrogates such as "\\ud800", NaN and Infinity, nesting deeper than 1,024), and it
has no int-digit limit to trip over (the standard parser raises a bare ValueError past 4,300).
"""

import asyncio
import zlib
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiDictProxy

from engine.api import keys
from engine.errors import ClientGone, IngestError

SERVER_ARGS: dict[str, Any] = {"auto_decompress": False}  # for web.run_app / AppRunner
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def json_body(request: web.Request, *, required: bool) -> Any:
    return parse_json(await read_body(request), required=required)


def parse_json(body: bytes, *, required: bool) -> Any:
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
        if request.content.is_eof():  # all here already: nothing to wait for
            raw = await request.read()
        else:
            async with asyncio.timeout(request.app[keys.settings].request_body_timeout_s):
                raw = await request.read()
    except TimeoutError:  # a client trickling its body holds a slot and memory: cut it off
        raise IngestError("the body took too long to arrive", status=408) from None
    except web.RequestPayloadError as exc:  # e.g. a chunked body cut short
        raise IngestError(f"body could not be read: {' '.join(str(exc).split())}", status=400) from None
    except ConnectionResetError as exc:  # aiohttp's "Connection lost" while reading the body
        raise ClientGone(str(exc)) from None
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in _WBITS:
        raise IngestError(
            f"Content-Encoding {encoding[:40]!r} is not supported: send gzip, deflate or none", status=415
        )
    return inflate(raw, encoding, request.app[keys.settings].max_body_bytes)


async def read_form(request: web.Request) -> "MultiDictProxy[str | bytes | bytearray | web.FileField]":
    """A form body, within the same deadline as any body (a trickled one is a 408)."""
    try:
        async with asyncio.timeout(request.app[keys.settings].request_body_timeout_s):
            return await request.post()
    except TimeoutError:
        raise IngestError("the body took too long to arrive", status=408) from None


def inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """Decompress a whole gzip or deflate body, refusing more than `limit` bytes of output."""
    raw_deflate = encoding == "deflate" and not _zlib_header(raw)  # as some clients send it
    inflater = zlib.decompressobj(-zlib.MAX_WBITS if raw_deflate else _WBITS[encoding])
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise IngestError(f"body does not decompress as {encoding}: {exc}", status=400) from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(out))
    if not inflater.eof:
        raise IngestError(f"body does not decompress as {encoding}: the stream is cut short", status=400)
    if inflater.unused_data:
        raise IngestError(f"body does not decompress as {encoding}: data after the stream's end", status=400)
    return out


def _zlib_header(raw: bytes) -> bool:
    return len(raw) >= 2 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0
