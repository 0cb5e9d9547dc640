"""The reference for the intake benchmark: a bare aiohttp handler that parses the same JSON
and answers 200, with nothing durable behind it."""

from __future__ import annotations

import json
import sys

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    json.loads(await request.read())
    return web.json_response({"ok": True})


def main() -> None:
    app = web.Application()
    app.router.add_post("/callbacks/{secret}/wa/inbox", handle)
    app.router.add_get("/healthz", lambda _: web.json_response({"status": "ok"}))
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
