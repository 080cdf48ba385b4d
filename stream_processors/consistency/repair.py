"""Repair what a verification found: missing rows re-driven from Kafka, stale hot view keys rewritten.

Rows come back through the normal re-drive (replay/redrive.py): idempotent, so a repair that runs twice
or beside the fleet stores nothing twice. A key is rewritten from PostgreSQL's newest row only if it
still holds what the verification read (compare-and-set in one script): if ingestion moved it on
meanwhile, it is current and left alone. Sequences lost before Kafka cannot be repaired from Kafka.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson
import redis.asyncio as redis

from guardian.settings import Settings
from guardian.stream_processors.consistency.hot_view import KeyFinding
from guardian.stream_processors.consistency.kafka_pg import DecodedRecord
from guardian.stream_processors.replay.redrive import redrive

# KEYS: the key, its sequence guard. ARGV: hash field ('' for a string key), value seen, new value,
# producer, sequence, [breaker state, event time]. The guard is raised to the row's sequence so the
# batch script does not move the key back to an older event of that producer afterwards.
REWRITE = """
local current
if ARGV[1] == '' then current = redis.call('GET', KEYS[1]) else current = redis.call('HGET', KEYS[1], ARGV[1]) end
if (current or '') ~= ARGV[2] then return 0 end
if ARGV[1] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('HSET', KEYS[1], 'event', ARGV[3], 'state', ARGV[6], 'event_time', ARGV[7])
end
local applied = tonumber(redis.call('HGET', KEYS[2], ARGV[4]) or '-1')
if tonumber(ARGV[5]) > applied then redis.call('HSET', KEYS[2], ARGV[4], ARGV[5]) end
return 1
"""


@dataclass
class RepairReport:
    rows_redriven: int = 0
    rows_inserted: int = 0
    keys_rewritten: int = 0
    keys_moved_on: int = 0  # changed by ingestion since the verification: left alone


def spans(records: list[DecodedRecord]) -> dict[int, list[tuple[int, int]]]:
    """partition -> [start, end) ranges covering the records' offsets."""
    out: dict[int, list[tuple[int, int]]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        ranges = out.setdefault(record.partition, [])
        if ranges and ranges[-1][1] == record.offset:
            ranges[-1] = (ranges[-1][0], record.offset + 1)
        else:
            ranges.append((record.offset, record.offset + 1))
    return out


async def redrive_missing(settings: Settings, missing: list[DecodedRecord], report: RepairReport,
                          progress: Callable[[int, int], None] = lambda done, total: None) -> None:  # fmt: skip
    by_partition = spans(missing)
    rounds = max((len(r) for r in by_partition.values()), default=0)
    for i in range(rounds):  # one range per partition per re-drive
        ranges = {p: r[i] for p, r in by_partition.items() if i < len(r)}
        summary = await redrive(settings, ranges, progress=progress)
        report.rows_redriven += summary.read
        report.rows_inserted += summary.inserted


async def rewrite_keys(client: redis.Redis, findings: list[KeyFinding], report: RepairReport) -> None:
    script = client.register_script(REWRITE)
    for finding in findings:
        row = finding.expected
        guard = f"guardian:seq:{row['symbol']}:{row['detector']}"
        state = row["payload"].get("to_state", "") if finding.field else ""
        done = await script(keys=[finding.key, guard], args=[
            finding.field or "", finding.seen or b"", orjson.dumps(row), row["producer_id"], row["sequence"],
            state, row["event_time"],
        ])  # fmt: skip
        if done:
            report.keys_rewritten += 1
        else:
            report.keys_moved_on += 1
