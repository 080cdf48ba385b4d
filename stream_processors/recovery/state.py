"""The derived state a fleet checkpoint holds, read from Redis and merged back into it.

What is checkpointed: per (symbol, detector) the newest event and the sequence guards, per
symbol the breaker and the newest drift per metric, the silences, and the alerts' Redis view.
Not the 24 h `recent` windows nor the minute counters: they are rebuilt by replaying the
window from Kafka through the normal batch script (rebuild.py), which counts each event once.

Merging never moves the view backwards, because ingestion goes on while it happens: the
newest event and breaker are written only where the key is missing (what a live worker wrote
since Redis was lost is newer), sequence guards take the maximum, silences and alerts are
added where missing.
"""

from __future__ import annotations

from typing import Any

import redis as redis_sync
import redis.asyncio as redis

from guardian.sinks.silences import SILENCES
from guardian.stream_processors.alerts.outputs import ACTIVE_SET, ALERT_KEY

LATEST = "guardian:latest:"
SEQ = "guardian:seq:"
BREAKER = "guardian:breaker:"
DRIFT = "guardian:drift:"
ALERT_PREFIX = ALERT_KEY.format("")
SCAN_COUNT = 2000
APPLY_CHUNK = 5000  # operations per script call: keeps each call short, so Redis serves ingestion between

# ARGV: groups of 4: op, key, field, value. S: SET if missing; H: HSET field if missing;
# M: HSET field to the larger number; A: SADD.
MERGE = """
local applied = 0
for i = 1, #ARGV, 4 do
  local op, key, field, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'S' then
    applied = applied + (redis.call('SET', key, value, 'NX') and 1 or 0)
  elseif op == 'H' then
    applied = applied + redis.call('HSETNX', key, field, value)
  elseif op == 'M' then
    local current = tonumber(redis.call('HGET', key, field) or '-1')
    if tonumber(value) > current then
      redis.call('HSET', key, field, value)
      applied = applied + 1
    end
  elseif op == 'A' then
    applied = applied + redis.call('SADD', key, value)
  end
end
return applied
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def dump(client: redis_sync.Redis) -> dict[str, Any]:
    """The checkpointed part of Redis, as JSON-ready dicts keyed by what follows each key's prefix.

    Synchronous, for a thread: one SCAN pass and pipelined reads, off the worker's event loop. On the
    loop, each of its ~50 round trips waited for a turn of a loop busy with ingestion: 8.9 s for a
    dump that takes 0.16 s when idle."""
    strings: dict[str, list[str]] = {LATEST: [], ALERT_PREFIX: []}
    hashes: dict[str, list[str]] = {SEQ: [], BREAKER: [], DRIFT: []}
    for raw in client.scan_iter(match="guardian:*", count=SCAN_COUNT):
        key = _text(raw)
        for prefix, keys in (*strings.items(), *hashes.items()):
            if key.startswith(prefix):
                keys.append(key)
                break
    out: dict[str, Any] = {}
    for name, prefix in (("latest", LATEST), ("alerts", ALERT_PREFIX)):
        keys, values = strings[prefix], []
        for start in range(0, len(keys), SCAN_COUNT):
            values += client.mget(keys[start : start + SCAN_COUNT])
        out[name] = {k.removeprefix(prefix): _text(v) for k, v in zip(keys, values, strict=True) if v is not None}
    for name, prefix in (("seq", SEQ), ("breaker", BREAKER), ("drift", DRIFT)):
        keys, values = hashes[prefix], []
        for start in range(0, len(keys), SCAN_COUNT):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + SCAN_COUNT]:
                pipe.hgetall(key)
            values += pipe.execute()
        out[name] = {
            k.removeprefix(prefix): {_text(f): _text(v) for f, v in fields.items()}
            for k, fields in zip(keys, values, strict=True)
            if fields
        }
    out["silences"] = {_text(k): _text(v) for k, v in client.hgetall(SILENCES).items()}
    out["alerts_active"] = sorted(_text(m) for m in client.smembers(ACTIVE_SET))
    return out


def merge_ops(state: dict[str, Any]) -> list[str]:
    """The state as MERGE's flat (op, key, field, value) arguments."""
    ops: list[str] = []
    for rest, body in state.get("latest", {}).items():
        ops += ["S", LATEST + rest, "", body]
    for rest, guards in state.get("seq", {}).items():
        for producer, sequence in guards.items():
            ops += ["M", SEQ + rest, producer, sequence]
    for prefix, name in ((BREAKER, "breaker"), (DRIFT, "drift")):
        for rest, fields in state.get(name, {}).items():
            for field, value in fields.items():
                ops += ["H", prefix + rest, field, value]
    for silence_id, body in state.get("silences", {}).items():
        ops += ["H", SILENCES, silence_id, body]
    for fingerprint, body in state.get("alerts", {}).items():
        ops += ["S", ALERT_PREFIX + fingerprint, "", body]
    for fingerprint in state.get("alerts_active", []):
        ops += ["A", ACTIVE_SET, "", fingerprint]
    return ops


async def merge(client: redis.Redis, state: dict[str, Any]) -> int:
    """Merge a checkpoint's state into Redis; returns how many keys or fields it wrote."""
    script = client.register_script(MERGE)
    ops = merge_ops(state)
    applied = 0
    for start in range(0, len(ops), APPLY_CHUNK * 4):
        applied += await script(args=ops[start : start + APPLY_CHUNK * 4])
    return applied
