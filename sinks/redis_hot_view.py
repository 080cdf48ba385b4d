"""Redis hot view: what operators look at first, current within milliseconds.

Key layout (all under the `guardian:` prefix; one Redis, not a cluster):

| key | type | content |
| --- | --- | --- |
| `guardian:latest:{symbol}:{detector}` | string | JSON of the newest event of that symbol and detector |
| `guardian:seq:{symbol}:{detector}` | hash | producer_id -> highest sequence applied (the guard) |
| `guardian:recent:{symbol}` | sorted set | JSON events of the last 24 h (newest `recent_max`), score = time (µs) |
| `guardian:breaker:{symbol}` | hash | `state`, `event_time` (µs), `event` (JSON) of the last breaker transition |
| `guardian:drift:{symbol}` | hash | metric -> JSON of the newest drift event of that metric |
| `guardian:minute:{YYYYmmddHHMM}` | hash | detector -> events that minute (UTC); expires after 25 h |
| `guardian:live` | stream | a `type=breaker` entry per breaker state change (sinks/live_feed.py) |

One Lua script applies a whole batch atomically. `latest` and `breaker` move only
when the event's (producer_id, sequence) is newer than the one applied, so a
redelivered or replayed batch never moves state backwards. `recent` is a sorted set
of the exact event JSON, so a redelivery adds nothing, and the minute counters
count only events that were new to `recent`: the whole view is idempotent.
A breaker whose state changes also gets an entry in the live feed (`guardian:live`), in the same
atomic call: a batch that moves nothing (a redelivery, a replay of older events) emits nothing, and
a rebuild of the view emits nothing at all (`emit=False`).

`guardian:hotview` (STATUS_KEY) says whether the view is complete; the
recovery layer (stream_processors/recovery.py) checkpoints and rebuilds it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache

import orjson
import redis.asyncio as redis
from redis.exceptions import NoScriptError

from guardian.schemas.events import Payload, StoredEvent, event_document
from guardian.sinks.live_feed import DEFAULT_MAXLEN, LIVE_STREAM

WINDOW_MICROS = 24 * 3600 * 1_000_000
# Whether the view can be trusted: a hash with `state` (READY, or REBUILDING while the recovery layer
# restores the newest events and breakers), `window` (COMPLETE, or REFILLING while the 24 h `recent`
# windows and minute counters are replayed after a rebuild), `since` (µs), `checkpoint` (id of the
# newest fleet checkpoint it reflects) and `detail`. Missing means Redis lost the view (or never had
# one): readers treat it as incomplete.
STATUS_KEY = "guardian:hotview"
READY = "ready"
REBUILDING = "rebuilding"
COMPLETE = "complete"
REFILLING = "refilling"
TRIM_EVERY_S = 1.0
RECENT_FIELDS = 5  # symbol, event time, JSON, detector, minute
# symbol, detector, producer, sequence, event time, breaker state, drift metric, JSON index, event id (breakers
# only: the live feed names it; passed rather than decoded from the JSON, which would cost every transition a parse)
LATEST_FIELDS = 9

# ARGV: now, window, keep (0: no trimming in this call), number of events, the live stream ('': emit nothing),
# its MAXLEN, the events (RECENT_FIELDS each), then the newest event per (symbol, detector, producer) of the batch
# (LATEST_FIELDS each; a drift event per metric, and every breaker event, so that each transition is applied
# and emitted in turn). Python picks those newest ones, so the guarded writes cost one round per key, not per
# event; counters are summed per (minute, detector) and written once each.
# Returns {events new to the window, latest/breaker/drift keys moved forward}.
APPLY_BATCH = """
local now = tonumber(ARGV[1])
local horizon = now - tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local live, live_max = ARGV[5], ARGV[6]
local first = 7
local new_events, changed = 0, 0
local symbols, counts = {}, {}
for i = first, first - 1 + n * 5, 5 do
  local symbol, event_time = ARGV[i], tonumber(ARGV[i + 1])
  if event_time >= horizon then
    if redis.call('ZADD', 'guardian:recent:' .. symbol, event_time, ARGV[i + 2]) == 1 then
      local counter = ARGV[i + 4] .. '\0' .. ARGV[i + 3]
      counts[counter] = (counts[counter] or 0) + 1
      new_events = new_events + 1
    end
  end
  symbols[symbol] = true
end
for counter, count in pairs(counts) do
  local sep = string.find(counter, '\0', 1, true)
  local key = 'guardian:minute:' .. string.sub(counter, 1, sep - 1)
  redis.call('HINCRBY', key, string.sub(counter, sep + 1), count)
  redis.call('EXPIRE', key, 90000)
end
for i = first + n * 5, #ARGV, 9 do
  local symbol, detector, producer = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local sequence, event_time, breaker, metric = tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local body = ARGV[first + tonumber(ARGV[i + 7]) * 5 + 2]
  local guard = 'guardian:seq:' .. symbol .. ':' .. detector
  local applied = tonumber(redis.call('HGET', guard, producer) or '-1')
  if sequence > applied then
    redis.call('HSET', guard, producer, sequence)
    redis.call('SET', 'guardian:latest:' .. symbol .. ':' .. detector, body)
    changed = changed + 1
    if breaker ~= '' then
      local key = 'guardian:breaker:' .. symbol
      local before = redis.call('HGET', key, 'state') or ''  -- false (no state yet) -> ''
      redis.call('HSET', key, 'state', breaker, 'event_time', event_time, 'event', body)
      changed = changed + 1
      if live ~= '' and before ~= breaker then
        redis.call('XADD', live, 'MAXLEN', '~', live_max, '*', 'type', 'breaker', 'symbol', symbol,
                   'from', before, 'to', breaker, 'event_time', event_time, 'event_id', ARGV[i + 8])
      end
    end
    if metric ~= '' then
      redis.call('HSET', 'guardian:drift:' .. symbol, metric, body)
      changed = changed + 1
    end
  end
end
if keep > 0 then
  for symbol, _ in pairs(symbols) do
    local recent = 'guardian:recent:' .. symbol
    redis.call('ZREMRANGEBYSCORE', recent, '-inf', '(' .. horizon)
    redis.call('ZREMRANGEBYRANK', recent, 0, -(keep + 1))
  end
end
return {new_events, changed}
"""


def event_json(event: dict) -> bytes:
    # orjson: ~5x faster than json here, and this runs for every event the worker stores.
    return orjson.dumps(event_document(event))


@lru_cache(maxsize=4096)
def minute_key(minute: int) -> str:
    """YYYYmmddHHMM (UTC) of a minute since the epoch; cached, a batch spans few minutes."""
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%Y%m%d%H%M")


def script_args(batch: Sequence[StoredEvent], now_micros: int, recent_max: int = 10_000, live_maxlen: int = 0) -> list:
    """The script's ARGV; `live_maxlen` 0: no live feed entries (a rebuild)."""
    live = LIVE_STREAM if live_maxlen > 0 else ""
    args: list = [now_micros, WINDOW_MICROS, recent_max, len(batch), live, live_maxlen]
    # (symbol, detector, producer, drift metric or breaker's index) -> index in batch
    newest: dict[tuple[str, str, str, str | int], int] = {}
    for index, stored in enumerate(batch):
        event = stored.event
        payload_name, payload = event["payload"]
        # Breakers are not reduced to the newest: an OPEN then CLOSED within one batch are two transitions
        # for the live feed (they are rare, so applying each costs nothing measurable).
        distinct = payload["metric"] if payload_name == Payload.DRIFT else ""
        if payload_name == Payload.CIRCUIT_BREAKER:
            distinct = index
        key = (event["symbol"], event["detector"], event["producer_id"], distinct)
        best = newest.get(key)
        if best is None or event["sequence"] > batch[best].event["sequence"]:
            newest[key] = index
        args += [
            event["symbol"],
            event["event_time"],
            event_json(event),
            event["detector"],
            minute_key(event["event_time"] // 60_000_000),
        ]
    for index in sorted(newest.values()):  # batch order, as events would have been applied one by one
        event = batch[index].event
        payload_name, payload = event["payload"]
        is_breaker = payload_name == Payload.CIRCUIT_BREAKER
        breaker = payload["to_state"] if is_breaker else ""
        metric = payload["metric"] if payload_name == Payload.DRIFT else ""
        args += [
            event["symbol"], event["detector"], event["producer_id"], event["sequence"], event["event_time"],
            breaker, metric, index, str(event["event_id"]) if is_breaker else "",
        ]  # fmt: skip
    return args


# Redis answers these while it is busy or degraded: retried. Any other error reply to the batch
# script is about the data it was given.
TRANSIENT_REPLIES = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "NOREPLICAS")


class RedisHotView:
    name = "redis"

    @staticmethod
    def is_permanent(error: Exception) -> bool:
        if isinstance(error, redis.ResponseError):
            return not isinstance(error, NoScriptError) and not str(error).startswith(TRANSIENT_REPLIES)
        return isinstance(error, (ValueError, OverflowError)) and not isinstance(error, redis.RedisError)

    def __init__(self, url: str, recent_max: int = 10_000, live_maxlen: int = DEFAULT_MAXLEN, emit: bool = True
                 ) -> None:  # fmt: skip
        # A bound on memory: at bench rates 24 h of events would not fit in RAM, and a big Redis
        # makes every AOF rewrite fork slower (measured: 650 MB -> 1.8 s emit->Redis p99 spikes).
        self.recent_max = recent_max
        # emit=False: a rebuild re-applies history, which is no news for the live feed.
        self.live_maxlen = live_maxlen if emit else 0
        self._trimmed_at = 0.0
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._script = self.client.register_script(APPLY_BATCH)

    async def start(self) -> None:
        await self.client.ping()

    async def write(self, batch: Sequence[StoredEvent]) -> tuple[int, int]:
        """Apply the batch; returns (events new to the 24 h window, latest/breaker/drift keys moved forward)."""
        if not batch:
            return 0, 0
        # Trimming the 24 h windows is the costly part of a small batch; once a second is plenty
        # (they overshoot the cap by at most a second of events meanwhile).
        now = time.monotonic()
        trim = now - self._trimmed_at >= TRIM_EVERY_S
        if trim:
            self._trimmed_at = now
        new_events, changed = await self._script(
            args=script_args(batch, time.time_ns() // 1000, self.recent_max if trim else 0, self.live_maxlen)
        )
        return new_events, changed

    async def close(self) -> None:
        await self.client.aclose()
