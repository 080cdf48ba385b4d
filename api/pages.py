"""Cursor pagination for every list route: `{items, next_cursor}`, keyset, not OFFSET.

A cursor is the sort key of the last item of a page, opaque to callers (base64url JSON), so the
next page starts strictly after it however many rows arrived in between, and page 1,000 costs
what page 1 does.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from fastapi import HTTPException
from pydantic import BaseModel

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), default=str).encode()).decode().rstrip("=")


def decode(cursor: str | None, arity: int) -> list[Any] | None:
    """The sort key inside a cursor; 400 when it is not one this API made."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        key = None
    if not isinstance(key, list) or len(key) != arity:
        raise HTTPException(400, "cursor is not one this API returned")
    return key


def page(items: list[T], limit: int, key_of: Callable[[T], Sequence[Any]]) -> Page[T]:
    """A page of `items`, fetched with `limit + 1` rows so the last page says it is the last."""
    more = len(items) > limit
    items = items[:limit]
    return Page[T](items=items, next_cursor=encode(key_of(items[-1])) if more and items else None)
