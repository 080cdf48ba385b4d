"""`/v1/tokens`: admins create, list and revoke API tokens (api/tokens.py; the CLI does the same)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from guardian.api import tokens
from guardian.api.auth import Admin
from guardian.api.tokens import Role, TokenError, TokenInfo

router = APIRouter(tags=["tokens"])


class NewToken(BaseModel):
    name: str = Field(description="Unique forever: the audit trail names the token's calls by it.")
    role: str = Field(pattern="^(viewer|operator|admin)$")


class CreatedToken(BaseModel):
    name: str
    role: str
    token: str = Field(description="Shown once; only a salted hash of it is stored.")


@router.get("/v1/tokens", response_model=list[TokenInfo])
async def list_tokens(request: Request, _: Admin) -> list[TokenInfo]:
    return [t for t in await tokens.listing(request.app.state.pool)]


@router.post("/v1/tokens", response_model=CreatedToken, status_code=201)
async def create_token(request: Request, body: NewToken, admin: Admin) -> CreatedToken:
    try:
        secret = await tokens.create(request.app.state.pool, body.name, Role.parse(body.role), created_by=admin.actor)
    except TokenError as exc:
        raise HTTPException(409, str(exc)) from None
    return CreatedToken(name=body.name, role=body.role, token=secret)


@router.delete("/v1/tokens/{name_or_id}", response_model=TokenInfo)
async def revoke_token(request: Request, name_or_id: str, admin: Admin) -> TokenInfo:
    try:
        info = await tokens.revoke(request.app.state.pool, name_or_id, revoked_by=admin.actor)
    except TokenError as exc:
        raise HTTPException(404 if "no token" in str(exc) else 409, str(exc)) from None
    request.app.state.auth.forget()
    return info
