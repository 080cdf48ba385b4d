"""`/v1/stream`: Server-Sent Events of breaker transitions, alert changes and the platform's metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from guardian.api.auth import Viewer

router = APIRouter(tags=["live"])
KEEPALIVE_S = 15.0  # a comment line now and then keeps proxies from closing an idle stream


@router.get(
    "/v1/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "events: breaker, alert, metrics"}},
)
async def stream(request: Request, _: Viewer, last_event_id: str | None = Header(None)) -> StreamingResponse:
    """Live: `breaker` (symbol, from, to, event_time), `alert` (fingerprint, rule, severity, status, symbol,
    silenced) and `metrics` every second. Reconnecting with `Last-Event-ID` resumes without a gap."""

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        async for message in request.app.state.live.subscribe(last_event_id, KEEPALIVE_S):
            yield message.encode() if message else b": keepalive\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
