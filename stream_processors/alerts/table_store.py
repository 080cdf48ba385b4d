"""Alert state in a Faust GlobalTable: every worker holds all of it, restored from the table's
changelog topic at start, so it survives restarts and is already there for a partition's next owner."""

from __future__ import annotations

from typing import Any


class TableStore:
    """The engine's StateStore over a Faust table created with use_partitioner=True
    (so it may be written from the ingest loop rather than from inside a Faust stream)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: str) -> dict | None:
        return self.table.get(key)

    def set(self, key: str, value: dict) -> None:
        self.table[key] = value

    def delete(self, key: str) -> None:
        if key in self.table:
            del self.table[key]

    def keys_with_prefix(self, prefix: str) -> list[str]:
        return [key for key in self.table if key.startswith(prefix)]
