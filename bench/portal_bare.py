"""The portal benchmark's baseline: a bare Starlette app under uvicorn, as the portal
is served (`python -m bench.portal_bare PORT`): GET / answers a short text; GET
/events is an sse-starlette stream per client; POST /tick?size=N sends every
connected client one event of N bytes (what the portal's fan-out does, without the
plane, the sessions or the templates)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

CLIENTS: set[asyncio.Queue[str]] = set()


async def hello(_request: Request) -> Response:
    return PlainTextResponse("ok")


async def events(_request: Request) -> Response:
    queue: asyncio.Queue[str] = asyncio.Queue(4)
    CLIENTS.add(queue)

    async def stream() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                yield {"event": "tick", "data": await queue.get()}
        finally:
            CLIENTS.discard(queue)

    return EventSourceResponse(stream(), ping=15, send_timeout=10)


async def tick(request: Request) -> Response:
    size = int(request.query_params.get("size", "1000"))
    body = request.query_params.get("mark", "") + "x" * size
    for queue in list(CLIENTS):
        if not queue.full():
            queue.put_nowait(body)
    return PlainTextResponse(str(len(CLIENTS)))


def main() -> None:
    app = Starlette(
        routes=[Route("/", hello), Route("/events", events), Route("/tick", tick, methods=["POST"])]
    )
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
