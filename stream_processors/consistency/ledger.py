"""The per-producer sequence ledger: gaps and duplicates end to end, per minute.

A producer numbers its events `epoch << 32 | n`, n = 1, 2, ... within a run. For each producer of the
verified offsets, every n between the lowest and the highest seen of an epoch should be somewhere:
- a row in PostgreSQL (the SQL below counts them per producer and minute of event time);
- in Kafka but not stored (the Kafka↔PostgreSQL check names those offsets: missing rows);
- dead-lettered (the DLQ records that still decode name their sequence).
A number that is none of these never reached Kafka: the spool → Kafka leg lost it. Two rows with one
sequence are duplicates (one event id should never carry two sequences, nor one sequence two ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from guardian.stream_processors.consistency import rows as window_rows
from guardian.stream_processors.consistency.rows import IN_RANGES

RUN = 1 << 32  # sequences of one run share sequence // RUN (the epoch)
# The producers of the verified offsets, and every row of theirs in the time window whatever its offset:
# a sequence stored from beyond the fleet's commit on another partition (partitions commit apart) is
# not a gap.
LEDGER = (
    IN_RANGES
    + """,
producers AS (SELECT DISTINCT producer_id FROM windowed),
ordered AS (
    SELECT e.producer_id, e.sequence, date_trunc('minute', e.event_time) AS minute,
           lag(e.sequence) OVER (PARTITION BY e.producer_id ORDER BY e.sequence) AS prev
    FROM guardian_events e JOIN producers USING (producer_id)
    WHERE e.event_time >= $4 AND e.event_time <= $5)
SELECT producer_id, minute, count(*) AS rows,
       count(*) FILTER (WHERE prev = sequence) AS duplicates,
       coalesce(array_agg(ARRAY[prev + 1, sequence - 1]) FILTER (
           WHERE prev IS NOT NULL AND prev / $6 = sequence / $6 AND sequence - prev > 1), '{}') AS gaps
FROM ordered GROUP BY producer_id, minute ORDER BY producer_id, minute
"""
)


@dataclass
class MinuteLine:
    producer_id: str
    minute: datetime
    rows: int
    duplicates: int
    lost: int = 0  # sequences that never reached Kafka
    missing_rows: int = 0  # in Kafka, not stored
    dead_lettered: int = 0


@dataclass
class Ledger:
    minutes: list[MinuteLine] = field(default_factory=list)
    lost_spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # producer -> [(first, last)]
    span_lines: dict[tuple[str, int, int], MinuteLine] = field(default_factory=dict)  # the line each span counts in

    def found_after_all(self, producer: str, span: tuple[int, int]) -> None:
        """A lost span turned up (stored beyond another partition's commit at the first look)."""
        self.lost_spans[producer].remove(span)
        if not self.lost_spans[producer]:
            del self.lost_spans[producer]
        self.span_lines.pop((producer, *span)).lost -= span[1] - span[0] + 1

    def totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for line in self.minutes:
            total = out.setdefault(line.producer_id, {"rows": 0, "duplicates": 0, "lost": 0, "missing_rows": 0,
                                                      "dead_lettered": 0})  # fmt: skip
            for name in total:
                total[name] += getattr(line, name)
        return out


async def build(conn: asyncpg.Connection, ranges: dict[int, tuple[int, int]], rows_from: datetime, rows_to: datetime,
                accounted: dict[tuple[str, int], str]) -> Ledger:  # fmt: skip
    """`accounted`: (producer, sequence) -> "missing_rows" or "dead_lettered" for the sequences the other
    checks found in Kafka; a gap made of those is theirs, the rest of a gap was lost before Kafka."""
    ledger = Ledger()
    if not ranges:
        return ledger
    rows = await conn.fetch(LEDGER, *window_rows.args(ranges, rows_from, rows_to), RUN, timeout=300)
    for row in rows:
        line = MinuteLine(row["producer_id"], row["minute"], row["rows"], row["duplicates"])
        for first, last in row["gaps"]:
            for kind, span in _split(row["producer_id"], first, last, accounted):
                if kind == "lost":
                    line.lost += span[1] - span[0] + 1
                    ledger.lost_spans.setdefault(line.producer_id, []).append(span)
                    ledger.span_lines[(line.producer_id, *span)] = line
                elif kind in ("missing_rows", "dead_lettered"):  # else stored outside the window: no gap
                    setattr(line, kind, getattr(line, kind) + span[1] - span[0] + 1)
        ledger.minutes.append(line)
    return ledger


Span = tuple[int, int]


def _split(producer: str, first: int, last: int, accounted: dict[tuple[str, int], str]) -> list[tuple[str, Span]]:
    """A gap [first, last] cut into runs of one kind: each number's kind from `accounted`, else lost.
    Gaps are short unless a producer lost many events; a long one without accounted numbers is one run."""
    if not any((producer, s) in accounted for s in range(first, min(last, first + 100_000) + 1)):
        return [("lost", (first, last))]
    runs: list[tuple[str, Span]] = []
    for sequence in range(first, last + 1):
        kind = accounted.get((producer, sequence), "lost")
        if runs and runs[-1][0] == kind and runs[-1][1][1] == sequence - 1:
            runs[-1] = (kind, (runs[-1][1][0], sequence))
        else:
            runs.append((kind, (sequence, sequence)))
    return runs
