"""The rows a verification looks at: stored from the verified offsets of the events topic, found by event time.

Rows are found through the time index first (event time from a little before the window), then kept
only if their Kafka partition and offset fall in the verified ranges: rows written some other way, or
beyond the fleet's commits, are not the window's business.
"""

from __future__ import annotations

from datetime import datetime

# $1 partitions, $2 first offsets, $3 ends, $4/$5 event time bounds; a statement adds its own from $6.
IN_RANGES = """
WITH r AS (SELECT * FROM unnest($1::int[], $2::int8[], $3::int8[]) AS r(p, s, e)),
windowed AS (
    SELECT e.* FROM guardian_events e
    JOIN r ON e.kafka_partition = r.p AND e.kafka_offset >= r.s AND e.kafka_offset < r.e
    WHERE e.event_time >= $4 AND e.event_time <= $5)
"""


def args(ranges: dict[int, tuple[int, int]], rows_from: datetime, rows_to: datetime) -> list:
    parts = sorted(ranges)
    return [parts, [ranges[p][0] for p in parts], [ranges[p][1] for p in parts], rows_from, rows_to]
