"""The live feed (`guardian:live`) against the real Redis and Kafka: breaker and alert changes, once each."""

from __future__ import annotations

import asyncio
import uuid

import redis
import redis.asyncio as aredis

from guardian.kafka_config import client_config
from guardian.producers import GuardianProducer
from guardian.schemas.checkpoint import TOPIC_CONFIG
from guardian.settings import Settings
from guardian.sinks.live_feed import LIVE_STREAM, parse_entry
from guardian.sinks.redis_hot_view import RedisHotView
from guardian.stream_processors.alerts.engine import Notification
from guardian.stream_processors.alerts.outputs import AlertPublisher, WebhookDispatcher
from guardian.stream_processors.alerts.rules import load_rules
from guardian.stream_processors.outbox import Outbox
from guardian.stream_processors.recovery.rebuild import rebuild_hot_view
from tests.integration.test_hot_view import breaker, drift


def last_id(client: redis.Redis) -> str:
    newest = client.xrevrange(LIVE_STREAM, count=1)
    return newest[0][0].decode() if newest else "0-0"


def entries_after(client: redis.Redis, start: str, **match: object) -> list[dict]:
    """The feed's entries after id `start` whose fields equal `match` (other tests write to it too)."""
    found = []
    for _, fields in client.xrange(LIVE_STREAM, f"({start}", "+"):
        entry = parse_entry(fields)
        if entry is not None and all(entry.get(k) == v for k, v in match.items()):
            found.append(entry)
    return found


def write(settings: Settings, *batches: list, live_maxlen: int = 10_000, emit: bool = True) -> None:
    async def scenario() -> None:
        view = RedisHotView(settings.redis_url, recent_max=100, live_maxlen=live_maxlen, emit=emit)
        try:
            for batch in batches:
                await view.write(batch)
        finally:
            await view.close()

    asyncio.run(scenario())


def test_a_breaker_change_is_one_entry_and_a_redelivery_none(settings: Settings):
    symbol = f"LV{uuid.uuid4().hex[:8].upper()}"
    client = redis.Redis.from_url(settings.redis_url)
    now_us = client.time()[0] * 1_000_000
    start = last_id(client)
    opened = [drift(symbol, 1, now_us - 10), breaker(symbol, 2, now_us, "OPEN")]

    write(settings, opened)
    first = entries_after(client, start, symbol=symbol)
    assert first == [{"type": "breaker", "symbol": symbol, "from": "", "to": "OPEN", "event_time": now_us,
                      "event_id": "p1-2"}]  # fmt: skip

    write(settings, opened, opened[1:])  # redelivered: the sequence guard holds, nothing moves
    assert len(entries_after(client, start, symbol=symbol)) == 1

    write(settings, [breaker(symbol, 3, now_us + 1, "CLOSED")])
    changes = [(e["from"], e["to"]) for e in entries_after(client, start, symbol=symbol)]
    assert changes == [("", "OPEN"), ("OPEN", "CLOSED")]

    # Two transitions in one batch are two entries; a breaker written again in the state it has is none.
    write(settings, [breaker(symbol, 4, now_us + 2, "OPEN"), breaker(symbol, 5, now_us + 3, "CLOSED")])
    write(settings, [breaker(symbol, 6, now_us + 4, "CLOSED")])
    changes = [(e["from"], e["to"]) for e in entries_after(client, start, symbol=symbol)]
    assert changes[2:] == [("CLOSED", "OPEN"), ("OPEN", "CLOSED")]
    assert client.hget(f"guardian:breaker:{symbol}", "state") == b"CLOSED"


def test_the_feed_stays_capped(settings: Settings):
    symbol = f"LV{uuid.uuid4().hex[:8].upper()}"
    client = redis.Redis.from_url(settings.redis_url)
    now_us = client.time()[0] * 1_000_000
    flips = [breaker(symbol, n, now_us + n, "OPEN" if n % 2 else "CLOSED") for n in range(1, 401)]
    write(settings, flips[:200], flips[200:], live_maxlen=50)
    # `MAXLEN ~`: Redis trims whole nodes of the stream (100 entries by default), so it keeps at least 50
    # and fewer than 50 + a node.
    assert 50 <= client.xlen(LIVE_STREAM) < 150
    assert entries_after(client, "0-0", symbol=symbol)[-1]["event_time"] == now_us + 400


def test_a_rebuild_emits_nothing(settings: Settings, new_topic):
    """A lost view rebuilt by replaying the events topic: its breakers come back, the feed hears nothing."""
    symbol = f"LV{uuid.uuid4().hex[:8].upper()}"
    client = redis.Redis.from_url(settings.redis_url)
    rebuild_settings = settings.model_copy(update={
        "events_topic": new_topic("events", partitions=2),
        "checkpoints_topic": new_topic("checkpoints", partitions=1, config=TOPIC_CONFIG),
        "worker_group": f"test-live-{uuid.uuid4().hex[:8]}",  # no checkpoint of its own: a full replay
    })  # fmt: skip
    producer = GuardianProducer(settings, producer_id=f"live-{uuid.uuid4().hex[:8]}",
                                topic=rebuild_settings.events_topic)  # fmt: skip
    with producer:
        producer.circuit_breaker(symbol, "CLOSED", "OPEN", reason="test", trip_count=1, cooldown_seconds=5)
        producer.circuit_breaker(symbol, "OPEN", "CLOSED", reason="test", trip_count=1, cooldown_seconds=5)
        assert producer.flush(30) == 0
    start = last_id(client)

    report = asyncio.run(rebuild_hot_view(rebuild_settings, reason="test_live_feed"))

    assert (report.source, report.tail_events) == ("full replay", 2)
    assert client.hget(f"guardian:breaker:{symbol}", "state") == b"CLOSED"  # applied...
    assert entries_after(client, start, symbol=symbol) == []  # ...and not announced


def alert(symbol: str, status: str) -> dict:
    fingerprint = f"fp-{symbol}"
    return {"fingerprint": fingerprint, "rule": "breaker_open", "severity": "P0", "status": status,
            "labels": {"symbol": symbol}, "summary": f"{symbol} breaker open", "starts_at": 1_000,
            "ends_at": 2_000 if status == "RESOLVED" else None, "event_id": str(uuid.uuid4()),
            "partition": 0, "last_notified_us": 0}  # fmt: skip


def publish(settings: Settings, topic: str, *rounds: list[Notification], live_maxlen: int = 10_000) -> None:
    async def scenario() -> None:
        client = aredis.Redis.from_url(settings.redis_url)
        outbox = Outbox(client_config(settings))
        webhooks = WebhookDispatcher()
        publisher = AlertPublisher(load_rules(), outbox, topic, client, webhooks, live_maxlen=live_maxlen)
        try:
            for notifications in rounds:
                await publisher.publish(notifications)
            await outbox.flush()
        finally:
            outbox.close()
            await webhooks.close()
            await client.aclose()

    asyncio.run(scenario())


def test_each_alert_change_is_one_entry_silenced_ones_included(settings: Settings, new_topic):
    loud, quiet = f"LV{uuid.uuid4().hex[:8].upper()}", f"LV{uuid.uuid4().hex[:8].upper()}"
    client = redis.Redis.from_url(settings.redis_url)
    start = last_id(client)
    topic = new_topic("alerts", partitions=1)

    publish(settings, topic,
            [Notification(alert(loud, "FIRING")), Notification(alert(quiet, "FIRING"), silenced=True)],
            [Notification(alert(loud, "FIRING"), repeat=True)],  # a reminder, not a change
            [Notification(alert(loud, "RESOLVED"))])  # fmt: skip

    assert [(e["status"], e["silenced"], e["at"]) for e in entries_after(client, start, symbol=loud)] == [
        ("FIRING", False, 1_000), ("RESOLVED", False, 2_000)]  # fmt: skip
    assert entries_after(client, start, symbol=quiet) == [{
        "type": "alert", "fingerprint": f"fp-{quiet}", "rule": "breaker_open", "severity": "P0", "status": "FIRING",
        "symbol": quiet, "silenced": True, "summary": f"{quiet} breaker open", "at": 1_000}]  # fmt: skip


def test_the_alert_entries_stay_capped(settings: Settings, new_topic):
    symbol = f"LV{uuid.uuid4().hex[:8].upper()}"
    client = redis.Redis.from_url(settings.redis_url)
    changes = [Notification({**alert(symbol, "FIRING"), "fingerprint": f"fp-{symbol}-{n}"}) for n in range(300)]
    publish(settings, new_topic("alerts", partitions=1), changes, live_maxlen=50)
    assert 50 <= client.xlen(LIVE_STREAM) < 150
