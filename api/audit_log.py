"""Every API request leaves an audit row and a metric, refusals and 404s included.

A plain ASGI middleware rather than `@app.middleware("http")`: that one buffers nothing but runs the
response in a task, which breaks streaming (Server-Sent Events) and hides the status of a response
that failed half-way. Here the row is written after the response has gone out, so the caller does
not wait for it, and a live stream is recorded when it opens (its duration is time to first byte).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guardian.logs import get_logger
from guardian.sinks.audit import append

log = get_logger(__name__)
# Served without a token and without an audit row: health and metrics are polled every few seconds,
# and static assets are the same files for everyone.
UNAUDITED = ("/healthz", "/metrics", "/static/")
MAX_PATH = 200  # an unmatched path is the caller's text: kept, but not without bound


class AuditAndMeasure:
    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("guardian_api_requests", "API requests", ["route", "status"], registry=registry)
        self.latency = Histogram("guardian_api_request_seconds", "API request latency", ["route"], registry=registry)
        self.audit_failures = Counter(
            "guardian_api_audit_failures", "API requests whose audit row could not be written", registry=registry
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500
        audited_early = False

        async def sending(message: Message) -> None:
            nonlocal status, audited_early
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = dict(message.get("headers") or [])
                if headers.get(b"content-type", b"").startswith(b"text/event-stream"):
                    await send(message)
                    audited_early = True
                    await self._record(scope, status, began)
                    return
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if not audited_early:
                await self._record(scope, status, began)

    async def _record(self, scope: Scope, status: int, began: float) -> None:
        path: str = scope["path"]
        route = getattr(scope.get("route"), "path", None)  # the template: one metric label per route
        elapsed = time.perf_counter() - began
        self.latency.labels(route or "unmatched").observe(elapsed)
        self.requests.labels(route or "unmatched", str(status)).inc()
        if path.startswith(UNAUDITED):
            return
        state: dict[str, Any] = scope.get("state") or {}
        pool = scope["app"].state.pool
        try:
            await append(
                pool,
                f"{scope['method']} {route or path[:MAX_PATH]}",
                actor=state.get("actor", "anonymous"),
                target=path[:MAX_PATH],
                status=status,
                detail=_query(scope),
                duration_s=elapsed,
            )
        except Exception as exc:  # the response is gone; say loudly that its row is missing
            self.audit_failures.inc()
            log.error("API audit row not written", path=path[:MAX_PATH], status=status, error=repr(exc))


def _query(scope: Scope) -> dict[str, str]:
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))[:50])
