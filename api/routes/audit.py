"""`/v1/audit`: the audit trail, newest first (admins only: it names every caller)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from guardian.api import pages
from guardian.api.auth import Admin

router = APIRouter(tags=["audit"])


class AuditRow(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    status: int | None
    detail: dict[str, Any]
    duration_s: float | None


@router.get("/v1/audit", response_model=pages.Page[AuditRow])
async def audit(
    request: Request,
    _: Admin,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> pages.Page[AuditRow]:
    after = pages.decode(cursor, 1)
    rows = await request.app.state.pool.fetch(
        "SELECT id, at, actor, action, target, status, detail, duration_s FROM guardian_audit"
        " WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR action = $2)"
        " AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::bigint IS NULL OR id < $4)"
        " ORDER BY id DESC LIMIT $5",
        actor, action, since, int(after[0]) if after else None, limit + 1,
    )  # fmt: skip
    items = [AuditRow(**{**dict(r), "detail": json.loads(r["detail"])}) for r in rows]
    return pages.page(items, limit, lambda row: (row.id,))
