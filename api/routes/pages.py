"""The dashboard: server-rendered pages (Jinja2) made live by one EventSource (static/app.js) and htmx
fragments. Logging in trades a token for an HttpOnly session cookie; the page never holds the token."""

# No `from __future__ import annotations`: FastAPI resolves the routes' annotations at run time.

from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from guardian.api import pages
from guardian.api.auth import SESSION_COOKIE, Admin, Viewer
from guardian.api.models import from_micros
from guardian.api.routes import audit as audit_routes
from guardian.api.routes import hot
from guardian.api.routes import symbols as symbol_routes
from guardian.api.tokens import Principal, Role
from guardian.sinks import alert_state

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
SESSION_S = 8 * 3600
VENDOR = Path(__file__).resolve().parent.parent / "static" / "vendor" / "htmx.min.js"


class LoginRequired(Exception):
    """A page asked for without a valid session: answered with the login page (api/app.py)."""


async def page_viewer(request: Request) -> Principal:
    """Pages redirect to the login form rather than answer 401 like the API does."""
    token = request.cookies.get(SESSION_COOKIE)
    principal = await request.app.state.auth.principal(token) if token else None
    if principal is None:
        request.state.actor = "anonymous"
        raise LoginRequired
    request.state.actor = principal.actor
    return principal


PageViewer = Annotated[Principal, Depends(page_viewer)]


def render(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    if not VENDOR.exists():  # a checkout whose set-up did not run: say what to do instead of a blank page
        return HTMLResponse("The dashboard's web assets are missing: run `make setup`.", status_code=503)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, principal: PageViewer) -> HTMLResponse:
    board = await hot.breakers(request.app.state.redis)
    return render(request, "overview.html", principal=principal, breakers=board)


@router.post("/login")
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    principal = await request.app.state.auth.principal(token) if token else None
    if principal is None:
        request.state.actor = "anonymous"
        return render(request, "login.html", status_code=401, principal=None, error="Unknown or revoked token.")
    request.state.actor = principal.actor
    response = RedirectResponse("/", status_code=303)
    # The token itself is the session: revoking it ends every session at once. HttpOnly keeps it from
    # scripts, SameSite=Strict from other sites' requests; Secure when served over HTTPS.
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_S, httponly=True, samesite="strict",
                        secure=request.app.state.settings.api_cookie_secure, path="/")  # fmt: skip
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/symbols/{symbol}", response_class=HTMLResponse)
async def symbol_page(request: Request, symbol: str, principal: PageViewer) -> HTMLResponse:
    redis = request.app.state.redis
    latest = await hot.latest(request, principal, symbol=symbol)
    board = [b for b in await hot.breakers(redis) if b.symbol == symbol]
    if not latest and not board:
        raise HTTPException(404, f"the hot view knows no symbol {symbol!r}")
    return render(request, "symbol.html", principal=principal, symbol=symbol, latest=latest,
                  breaker=board[0] if board else None)  # fmt: skip


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, principal: PageViewer) -> HTMLResponse:
    if principal.role < Role.ADMIN:
        raise HTTPException(403, "the audit log is for admins")
    return render(request, "audit.html", principal=principal)


@router.get("/ui/alerts", response_class=HTMLResponse)
async def alerts_fragment(request: Request, principal: Viewer) -> HTMLResponse:
    alerts = []
    for alert in await alert_state.active(request.app.state.redis):
        matchers = {"rule": alert["rule"], **({"symbol": alert["symbol"]} if alert.get("symbol") else {})}
        alerts.append({**alert, "starts_at": from_micros(alert["starts_at"]), "matchers": matchers})
    return render(request, "alerts.html", alerts=alerts, can_silence=principal.role >= Role.OPERATOR)


@router.get("/ui/timeline/{symbol}", response_class=HTMLResponse)
async def timeline_fragment(request: Request, symbol: str, principal: Viewer, cursor: str | None = None,
                            kind: Annotated[list[str] | None, Query()] = None):  # fmt: skip
    kinds = [k for k in kind or [] if k in symbol_routes.BRANCHES] or None
    page = await symbol_routes.timeline(request, symbol, principal, cursor=cursor, limit=50, kind=kinds)
    query = urlencode({"cursor": page.next_cursor, "kind": kinds or []}, doseq=True)
    next_url = f"/ui/timeline/{quote(symbol)}?{query}" if page.next_cursor else None
    return render(request, "timeline_rows.html", items=page.items, next_url=next_url)


@router.get("/ui/audit", response_class=HTMLResponse)
async def audit_fragment(request: Request, principal: Admin, cursor: str | None = None) -> HTMLResponse:
    page: pages.Page = await audit_routes.audit(request, principal, cursor=cursor, limit=100)
    next_url = f"/ui/audit?{urlencode({'cursor': page.next_cursor})}" if page.next_cursor else None
    return render(request, "audit_rows.html", rows=page.items, next_url=next_url)
