"""A transition the fleet sent already is not sent again (stream_processors/alerts/outputs.py)."""

from __future__ import annotations

import asyncio

import redis.asyncio as redis

from guardian.stream_processors.alerts.engine import Notification
from guardian.stream_processors.alerts.outputs import SENT_KEY, AlertPublisher, transition_id


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


def test_a_transition_is_one_status_of_one_episode_reached_by_one_event():
    assert transition_id(alert()) == transition_id(alert())
    others = [alert(starts_at=200), alert("RESOLVED", ends_at=150), alert(event_id="e2")]
    assert len({transition_id(a) for a in [alert(), *others]}) == 4


def test_sent_transitions_are_left_out_and_repeats_and_new_ones_kept():
    # Fired, resolved 50 events later, then both events redelivered to a worker whose state lacks them:
    # the alert's newest record says RESOLVED, but the FIRING was sent too.
    fired, resolved = alert(), alert("RESOLVED", ends_at=150)
    stored = {SENT_KEY.format(transition_id(fired)): b"1", SENT_KEY.format(transition_id(resolved)): b"1"}
    again, repeat, new = Notification(fired), Notification(fired, repeat=True), Notification(alert(starts_at=300))
    assert not_announced(Client(stored), [again, repeat, Notification(resolved), new]) == [repeat, new]
    assert not_announced(Client(), [again]) == [again]  # no mark (a new alert, or a flushed Redis)


def test_with_redis_away_everything_is_sent():
    stored = {SENT_KEY.format(transition_id(alert())): b"1"}
    again = Notification(alert())
    assert not_announced(Client(stored, down=True), [again]) == [again]


def test_marks_are_left_only_once_kafka_acknowledged_the_records():
    """A mark for a record a crash kept from Kafka would silence its resend by the next owner for good."""
    steps: list[str] = []

    class Outbox:
        def send(self, topic, value, key) -> None:
            steps.append("sent")

        async def flush(self) -> None:
            steps.append("acknowledged")

    class Pipeline:
        def set(self, key, value, ex) -> None:
            steps.append(f"mark {key.removeprefix(SENT_KEY.format(''))[:8]} for {ex} s")

        async def execute(self) -> None:
            steps.append("marked")

    class MarkingClient(Client):
        def pipeline(self, transaction: bool) -> Pipeline:
            return Pipeline()

    publisher = AlertPublisher.__new__(AlertPublisher)
    publisher.client, publisher.outbox, publisher._unmarked = MarkingClient(), Outbox(), []  # type: ignore[assignment]
    publisher._unmarked.append(transition_id(alert()))
    asyncio.run(publisher.mark_sent())
    assert steps == ["acknowledged", f"mark {transition_id(alert())[:8]} for 3600 s", "marked"]
    asyncio.run(publisher.mark_sent())  # nothing new: no flush, no write
    assert len(steps) == 3 and publisher._unmarked == []


def test_marks_wait_for_a_later_commit_while_kafka_has_not_acknowledged():
    from guardian.stream_processors.outbox import OutboxError

    class Outbox:
        async def flush(self) -> None:
            raise OutboxError("1 record(s) not acknowledged by Kafka within 30 s")

    publisher = AlertPublisher.__new__(AlertPublisher)
    publisher.client, publisher.outbox, publisher._unmarked = Client(), Outbox(), ["t1"]  # type: ignore[assignment]
    asyncio.run(publisher.mark_sent())  # no exception: the batch's commit must not fail for a mark
    assert publisher._unmarked == ["t1"]
