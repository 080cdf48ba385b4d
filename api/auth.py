"""Who is calling, and may they: a bearer token or the dashboard's session cookie, resolved to a
`Principal` with a role; `require(role)` is the dependency each route declares.

The caller's name goes on `request.state.actor` before the role check, so a refused call (403) is
audited under the token's name, a token that matches nothing under `invalid-token:<fingerprint>`, and
a call without one as `anonymous` (api/audit_log.py writes the row).
"""

# No `from __future__ import annotations`: FastAPI resolves the dependencies' annotations at run time.

import hmac
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from guardian.api import tokens
from guardian.api.tokens import Principal, Role

SESSION_COOKIE = "guardian_session"
# How long a verified token is trusted without asking PostgreSQL again: the bound on how late a
# revocation takes effect, and what keeps a busy dashboard from one token lookup per request.
CACHE_TTL_S = 5.0
BREAK_GLASS = "env"  # the name GUARDIAN_API_TOKEN's caller has in the audit trail

bearer = HTTPBearer(auto_error=False)


class Authenticator:
    """Resolves tokens for one API process: the break-glass env token first, then the token table."""

    def __init__(self, pool: asyncpg.Pool, env_token: str | None) -> None:
        self.pool = pool
        self.env_token = env_token
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def principal(self, token: str) -> Principal | None:
        if self.env_token and hmac.compare_digest(token.encode(), self.env_token.encode()):
            return Principal(BREAK_GLASS, Role.ADMIN)
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached and cached[0] > now:
            return cached[1]
        found = await tokens.verify(self.pool, token)
        if len(self._cache) > 10_000:  # tokens that match nothing must not grow it without bound
            self._cache.clear()
        self._cache[token] = (now + CACHE_TTL_S, found)
        return found

    def forget(self) -> None:
        """Drop what this process remembers (a revocation made here applies at once; elsewhere within
        CACHE_TTL_S)."""
        self._cache.clear()


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "X-Guardian-CSRF"


def presented_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The bearer token, else the session cookie (the dashboard's pages and its fetches)."""
    if credentials is not None:
        return credentials.credentials
    return request.cookies.get(SESSION_COOKIE) or None


def forged(request: Request, credentials: HTTPAuthorizationCredentials | None) -> bool:
    """A change made with the session cookie but without the header only the dashboard's own script
    sends: another site cannot add a custom header to a cross-site request without CORS, which this API
    does not allow (SameSite=Strict on the cookie is the first line; this is the second)."""
    return credentials is None and request.method not in SAFE_METHODS and CSRF_HEADER.lower() not in request.headers


async def caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    token = presented_token(request, credentials)
    if token is None:
        request.state.actor = "anonymous"
        raise HTTPException(401, "a bearer token (or the dashboard's session) is required",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    principal = await request.app.state.auth.principal(token)
    if principal is None:
        request.state.actor = f"invalid-token:{tokens.fingerprint(token)}"
        raise HTTPException(401, "unknown, malformed or revoked token", headers={"WWW-Authenticate": "Bearer"})
    request.state.actor = principal.actor
    if forged(request, credentials):
        raise HTTPException(403, f"a change made with the dashboard's session needs the {CSRF_HEADER} header")
    return principal


def require(role: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency: the caller, if their role is at least `role`; 403 otherwise."""

    async def allowed(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if principal.role < role:
            raise HTTPException(403, f"needs the {role.label} role; this token is {principal.role.label}")
        return principal

    return allowed


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
