"""The query API: the hot view, history, alerts, status and a live stream, behind role-checked tokens;
every request audited (api/audit_log.py). `/healthz` and `/metrics` stay open for probes and Prometheus."""

# No `from __future__ import annotations`: FastAPI resolves the routes' annotations at run time.

from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import redis.asyncio as redis
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from guardian.api import tokens
from guardian.api.audit_log import AuditAndMeasure
from guardian.api.auth import Authenticator, Viewer
from guardian.api.live import LiveHub
from guardian.api.routes import alerts, audit, events, hot, ops, pages, status, stream, symbols
from guardian.api.routes import tokens as token_routes
from guardian.api.sampler import Sampler
from guardian.errors import ConfigError
from guardian.settings import Settings, masked

STATIC = Path(__file__).parent / "static"
VERSION = "0.2.0"


NO_ADMIN = (
    "the API has no admin: create a token with `guardian api token create --name NAME --role admin`"
    " (or set GUARDIAN_API_TOKEN, a break-glass admin token, to a long random value)"
)


async def ensure_can_start(settings: Settings, pool: asyncpg.Pool | None = None) -> None:
    """Refuse to serve an API nobody could administer, and say so before binding a port."""
    if settings.api_token:
        return
    try:
        db = pool or await asyncpg.connect(settings.postgres_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise ConfigError(
            f"PostgreSQL ({masked('postgres_dsn', settings.postgres_dsn)}) is unreachable: {exc}"
        ) from None
    try:
        if not await tokens.has_active_admin(db):
            raise ConfigError(NO_ADMIN)
    finally:
        if pool is None:
            await db.close()


def create_app(settings: Settings) -> FastAPI:
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=8)
        app.state.redis = redis.from_url(settings.redis_url, socket_timeout=5)
        try:
            await ensure_can_start(settings, app.state.pool)
            app.state.auth = Authenticator(app.state.pool, settings.api_token)
            app.state.kafka_lag = status.KafkaLag(settings)
            app.state.jobs = ops.Jobs()
            app.state.live = LiveHub(app.state.redis)
            sampler = Sampler(app.state.live, app.state.redis, app.state.pool, app.state.kafka_lag)
            app.state.live.start()
            sampler.start()
            try:
                yield
            finally:
                await sampler.stop()
                await app.state.live.stop()
        finally:
            await app.state.redis.aclose()
            await app.state.pool.close()

    # The interactive docs and the schema are served below, to callers with a token only.
    app = FastAPI(title="Guardian query API", version=VERSION, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    app.state.settings = settings
    app.add_middleware(AuditAndMeasure, registry=registry)
    routers = (events, hot, alerts, symbols, status, stream, ops, audit, token_routes, pages)
    for router in (module.router for module in routers):
        app.include_router(router)

    @app.exception_handler(pages.LoginRequired)
    async def login_first(request: Request, _: pages.LoginRequired) -> Response:
        if request.url.path == "/":
            return pages.render(request, "login.html", principal=None)
        return RedirectResponse("/", status_code=303)

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        try:
            await request.app.state.pool.fetchval("SELECT 1")
        except Exception as exc:
            return JSONResponse({"status": "down", "postgresql": str(exc) or type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(_: Viewer) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(_: Viewer) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="Guardian query API",
            swagger_js_url="/static/vendor/swagger-ui-bundle.js", swagger_css_url="/static/vendor/swagger-ui.css",
            swagger_favicon_url="data:,",
        )  # fmt: skip

    return app
