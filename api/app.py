"""The query API: events from PostgreSQL, health, metrics; bearer-token auth; every request audited."""

# No `from __future__ import annotations`: FastAPI must resolve the closures used in Depends().

import hashlib
import json
import secrets
import time
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from guardian.settings import Settings, require_secret
from guardian.sinks.audit import append as append_audit_row

bearer = HTTPBearer(auto_error=False)


def create_app(settings: Settings) -> FastAPI:
    token = require_secret(settings.api_token, "GUARDIAN_API_TOKEN")
    registry = CollectorRegistry()
    requests = Counter("guardian_api_requests", "API requests", ["route", "status"], registry=registry)
    latency = Histogram("guardian_api_request_seconds", "API request latency", ["route"], registry=registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=8)
        yield
        await app.state.pool.close()

    app = FastAPI(title="Guardian query API", version="0.1.0", lifespan=lifespan)

    def actor(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token")
        # The audit names the caller by a token fingerprint, never the token itself.
        return "token:" + hashlib.sha256(credentials.credentials.encode()).hexdigest()[:12]

    @app.middleware("http")
    async def audit_and_measure(request: Request, call_next):
        began = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        latency.labels(path).observe(time.perf_counter() - began)
        requests.labels(path, str(response.status_code)).inc()
        if path.startswith("/v1/"):
            who = request.state.actor if hasattr(request.state, "actor") else "anonymous"
            # Through the same hash chain as every other row: the table's trigger links it.
            await append_audit_row(
                app.state.pool,
                f"{request.method} {path}",
                actor=who,
                target=str(request.url.path),
                status=response.status_code,
                detail=dict(request.query_params),
                duration_s=time.perf_counter() - began,
            )
        return response

    def authenticated(request: Request, who: Annotated[str, Depends(actor)]) -> str:
        request.state.actor = who
        return who

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        await app.state.pool.fetchval("SELECT 1")
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/events")
    async def events(
        _: Annotated[str, Depends(authenticated)],
        symbol: str | None = None,
        detector: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        rows = await app.state.pool.fetch(
            "SELECT event_id, event_time, producer_id, sequence, host, symbol, detector, severity, payload_type,"
            " payload FROM guardian_events WHERE ($1::text IS NULL OR symbol = $1)"
            " AND ($2::text IS NULL OR detector = $2) AND ($3::timestamptz IS NULL OR event_time >= $3)"
            " AND ($4::timestamptz IS NULL OR event_time < $4) ORDER BY event_time DESC LIMIT $5",
            symbol,
            detector,
            since,
            until,
            limit,
        )
        return [{**dict(r), "event_id": str(r["event_id"]), "payload": json.loads(r["payload"])} for r in rows]

    @app.get("/v1/audit")
    async def audit(
        _: Annotated[str, Depends(authenticated)], limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        rows = await app.state.pool.fetch(
            "SELECT id, at, actor, action, target, status, detail, duration_s FROM guardian_audit"
            " ORDER BY id DESC LIMIT $1",
            limit,
        )
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    return app
