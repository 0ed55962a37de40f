"""The ceiling of this stack: a bare aiohttp server that parses the JSON body and answers a small JSON.

Same interpreter, same aiohttp, same event loop policy and no access log, as `engine serve`:
the difference between the two is the engine's own work (validation, routing, decide, Redis).

    python bench/echo_server.py --listen 127.0.0.1:9096
"""

import argparse
import json

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    alerts = body.get("alerts", []) if isinstance(body, dict) else []
    return web.json_response({"status": "ok", "alerts": len(alerts)})


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="OK\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:9096", help="host:port")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/api/v1/alertmanager", echo)
    app.router.add_get("/-/healthy", healthy)
    web.run_app(app, host=host, port=int(port), print=None, access_log=None)


if __name__ == "__main__":
    main()
