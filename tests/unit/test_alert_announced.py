"""A transition the fleet announced already is not announced again (stream_processors/alerts/outputs.py)."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as redis

from guardian.stream_processors.alerts.engine import Notification
from guardian.stream_processors.alerts.outputs import AlertPublisher, alert_event, same_transition


def alert(status: str = "FIRING", starts_at: int = 100, ends_at: int | None = None, event_id: str = "e1") -> dict:
    return {"fingerprint": "fp", "rule": "breaker_open", "severity": "P0", "status": status, "labels": {},
            "summary": "s", "starts_at": starts_at, "ends_at": ends_at, "event_id": event_id}  # fmt: skip


class Client:
    def __init__(self, stored: dict[str, bytes] | None = None, down: bool = False) -> None:
        self.stored, self.down = stored or {}, down

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        if self.down:
            raise redis.ConnectionError("refused")
        return [self.stored.get(key) for key in keys]


def not_announced(client: Client, notifications: list[Notification]) -> list[Notification]:
    publisher = AlertPublisher.__new__(AlertPublisher)
    publisher.client = client  # type: ignore[assignment]
    return asyncio.run(publisher._not_announced(notifications))


def test_the_same_transition_is_the_same_status_episode_and_event():
    fired = alert_event(alert())
    assert same_transition(fired, alert())
    assert not same_transition(fired, alert(starts_at=200))  # fired again later: a new episode
    assert not same_transition(fired, alert("RESOLVED", ends_at=150))
    assert not same_transition(fired, alert(event_id="e2"))


def test_announced_transitions_are_left_out_and_repeats_and_new_ones_kept():
    stored = {"guardian:alert:fp": json.dumps(alert_event(alert())).encode()}
    again, repeat = Notification(alert()), Notification(alert(), repeat=True)
    resolved = Notification(alert("RESOLVED", ends_at=150))
    assert not_announced(Client(stored), [again, repeat, resolved]) == [repeat, resolved]
    assert not_announced(Client(), [again]) == [again]  # nothing in Redis (a new alert, or a flushed view)


def test_with_redis_away_everything_is_announced():
    stored = {"guardian:alert:fp": json.dumps(alert_event(alert())).encode()}
    client = Client(stored, down=True)
    again = Notification(alert())
    assert not_announced(client, [again]) == [again]
