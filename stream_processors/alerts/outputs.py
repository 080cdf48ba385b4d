"""Where alert state changes go: the alerts topic (Avro), Redis (pub/sub + active set), webhooks.

Redis layout:

| key | type | content |
| --- | --- | --- |
| `guardian:alerts:active` | set | fingerprints of FIRING alerts (silenced ones included) |
| `guardian:alert:{fingerprint}` | string | JSON of the alert's latest state, with `silenced` |
| `guardian:alerts` | pub/sub channel | JSON of each notification (not for silenced alerts) |
| `guardian:silences` | hash | silence id -> JSON {matchers, expires_at_us, comment, created_by} (sinks/silences.py) |
| `guardian:live` | stream | a `type=alert` entry per state change, silenced ones included (sinks/live_feed.py) |

Webhooks get Alertmanager's webhook JSON (version 4), one POST per group of alerts that
changed together (grouped by the rule set's `group_by` labels), per severity receiver,
retried with exponential backoff up to the receiver's `max_attempts`.

Every attempt (each POST try, each Redis publish, and a silenced notification) goes to the
notification log (stream_processors/alerts/history.py), one row per alert, never waited on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp
import redis.asyncio as redis

from guardian.logs import get_logger
from guardian.schemas.codec import EventCodec, load_alert_schema
from guardian.sinks.alert_history import Attempt, notification_key, redact_receiver
from guardian.sinks.alert_state import ACTIVE_SET, ALERT_KEY, CHANNEL
from guardian.sinks.live_feed import DEFAULT_MAXLEN, LIVE_STREAM, alert_fields
from guardian.sinks.silences import SILENCES
from guardian.stream_processors import metrics
from guardian.stream_processors.alerts.engine import Notification, Silence
from guardian.stream_processors.alerts.history import NotificationLog
from guardian.stream_processors.alerts.rules import RuleSet, Webhook
from guardian.stream_processors.outbox import Outbox, OutboxError

log = get_logger(__name__)

# The mark of a transition sent (`_not_announced`); kept as long as events may come twice: a redelivery
# after a kill or a move comes within minutes (a replay, later, is told apart by the engine itself).
SENT_KEY = "guardian:alert-sent:{}"
SENT_KEPT_S = 3600
__all__ = ["ACTIVE_SET", "ALERT_KEY", "CHANNEL", "SILENCES"]  # SILENCES: the hash lives in sinks/silences.py
ALERTS_SUBJECT = "guardian.alerts.v1-value"
SUMMARY_MAX = 2_000  # characters: the summary quotes the breaker's reason, itself capped at 4,096


def alert_event(alert: dict, repeat: bool = False, silenced: bool = False) -> dict:
    """The AlertEvent record (schemas/avro/alert_event.avsc) of an alert state."""
    return {
        "fingerprint": alert["fingerprint"],
        "rule": alert["rule"],
        "severity": alert["severity"],
        "status": alert["status"],
        "symbol": alert["labels"].get("symbol"),
        "labels": alert["labels"],
        "summary": alert["summary"][:SUMMARY_MAX],
        "starts_at": alert["starts_at"],
        "ends_at": alert["ends_at"],
        "event_id": alert["event_id"],
        "event_time": alert.get("event_time"),  # absent from alert state written before the field
        "notified_at": alert.get("last_notified_us"),
        "repeat": repeat,
        "silenced": silenced,
    }


def transition_id(alert: dict) -> str:
    """One transition of an alert: its status in one episode (start, end), reached by one event."""
    text = "|".join(str(alert.get(k)) for k in ("fingerprint", "status", "starts_at", "ends_at", "event_id"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def alert_key(alert: dict) -> str:
    """The notification key of this alert state (sinks/alert_history.py)."""
    return notification_key(alert["fingerprint"], alert["status"], alert["starts_at"], alert.get("last_notified_us"))


def attempt_row(n: Notification, channel: str, receiver: str, attempt: int, outcome: str, at: datetime,
                **facts: object) -> Attempt:  # fmt: skip
    a = n.alert
    return Attempt(alert_key(a), a["fingerprint"], a["labels"].get("symbol"), a["rule"], a["status"], channel,
                   receiver, attempt, outcome, at, **facts)  # type: ignore[arg-type]  # fmt: skip


def _iso(micros: int | None) -> str:
    if micros is None:
        return "0001-01-01T00:00:00Z"  # Alertmanager's "not ended"
    return datetime.fromtimestamp(micros / 1_000_000, UTC).isoformat().replace("+00:00", "Z")


def webhook_payload(receiver: str, group: dict[str, str], notifications: Sequence[Notification]) -> dict:
    """Alertmanager's webhook body (version 4) for one group."""
    alerts = []
    for n in notifications:
        a = n.alert
        alerts.append(
            {
                "status": a["status"].lower(),
                "labels": {"alertname": a["rule"], "severity": a["severity"], **a["labels"]},
                "annotations": {"summary": a["summary"]},
                "startsAt": _iso(a["starts_at"]),
                "endsAt": _iso(a["ends_at"]),
                "fingerprint": a["fingerprint"],
                "generatorURL": "",
            }
        )
    label_sets = [alert["labels"] for alert in alerts]
    common = {k: v for k, v in label_sets[0].items() if all(s.get(k) == v for s in label_sets)}
    return {
        "version": "4",
        "groupKey": json.dumps(group, sort_keys=True),
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "",
        "truncatedAlerts": 0,
        "alerts": alerts,
    }


class WebhookDispatcher:
    """POSTs in the background (the ingest loop never waits on a receiver), retried with backoff."""

    def __init__(self, concurrency: int = 16, history: NotificationLog | None = None) -> None:
        self.history = history
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task] = set()

    def send(self, webhook: Webhook, payload: dict, members: Sequence[Notification] = ()) -> None:
        """POST `payload` (the webhook body of `members`) in the background."""
        task = asyncio.ensure_future(self._deliver(webhook, payload, members))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record(self, members: Sequence[Notification], receiver: str, attempt: int, outcome: str, at: datetime,
                http_status: int | None, error: str | None, latency_s: float) -> None:  # fmt: skip
        if self.history is not None:
            for n in members:
                self.history.record(attempt_row(n, "webhook", receiver, attempt, outcome, at, http_status=http_status,
                                            error=error, latency_s=round(latency_s, 6)))  # fmt: skip

    async def _deliver(self, webhook: Webhook, payload: dict, members: Sequence[Notification] = ()) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = str(webhook.url)
        receiver = redact_receiver(url)
        delay = 0.2
        for attempt in range(1, webhook.max_attempts + 1):
            http_status: int | None = None
            async with self._slots:  # the latency measured is the receiver's, not the wait for a slot
                at, began = datetime.now(UTC), time.perf_counter()
                try:
                    async with self._session.post(
                        url, json=payload, timeout=aiohttp.ClientTimeout(total=webhook.timeout_s)
                    ) as response:
                        http_status = response.status
                    problem = None if http_status < 300 else f"HTTP {http_status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    problem = repr(exc)
                latency_s = time.perf_counter() - began
            if problem is None:
                metrics.WEBHOOKS.labels("delivered").inc()
                self._record(members, receiver, attempt, "delivered", at, http_status, None, latency_s)
                return True
            last = attempt == webhook.max_attempts
            self._record(members, receiver, attempt, "failed" if last else "retried", at, http_status, problem,
                         latency_s)  # fmt: skip
            if not last:
                metrics.WEBHOOKS.labels("retried").inc()
                log.warning("webhook failed; retrying", url=url, attempt=attempt, problem=problem, in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        metrics.WEBHOOKS.labels("failed").inc()
        log.error("webhook gave up", url=url, attempts=webhook.max_attempts, problem=problem)
        return False

    async def drain(self, timeout_s: float = 10.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    async def close(self) -> None:
        await self.drain()
        if self._session is not None:
            await self._session.close()


class AlertPublisher:
    def __init__(
        self,
        rules: RuleSet,
        outbox: Outbox,
        topic: str,
        client: redis.Redis,
        webhooks: WebhookDispatcher,
        registry_url: str | None = None,
        live_maxlen: int = DEFAULT_MAXLEN,
        history: NotificationLog | None = None,
    ) -> None:
        self.history = history
        self.rules = rules
        self.live_maxlen = live_maxlen
        self.outbox = outbox
        self.topic = topic
        self.client = client
        self.webhooks = webhooks
        self.codec = EventCodec(load_alert_schema(), registry_url=registry_url, subject=ALERTS_SUBJECT)
        self._unmarked: list[str] = []  # transitions sent to the outbox, not yet marked in Redis (mark_sent)

    async def publish(self, notifications: Sequence[Notification]) -> None:
        """Topic and webhooks once; Redis retried until it takes them (the ingest loop waits meanwhile)."""
        notifications = await self._not_announced(notifications)
        if not notifications:
            return
        for n in notifications:
            alert = n.alert
            metrics.ALERTS.labels(alert["rule"], alert["severity"], alert["status"], str(n.repeat).lower()).inc()
            record = alert_event(alert, repeat=n.repeat, silenced=n.silenced)
            self.outbox.send(self.topic, self.codec.encode(record), key=alert["fingerprint"].encode())
            if not n.repeat:
                self._unmarked.append(transition_id(alert))
        self._notify_receivers([n for n in notifications if not n.silenced])
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            at, began = datetime.now(UTC), time.perf_counter()
            try:
                await self._to_redis(notifications)
                self._record_redis(notifications, attempt, at, None, time.perf_counter() - began)
                return
            except redis.RedisError as exc:
                self._record_redis(notifications, attempt, at, repr(exc), time.perf_counter() - began)
                log.warning("alerts not in Redis yet; retrying", error=repr(exc), in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _not_announced(self, notifications: Sequence[Notification]) -> list[Notification]:
        """Leave out the transitions the fleet sent already. Events processed twice (by a worker killed before
        it committed them, then by the partition's next owner, whose copy of the alert state may not have
        them yet) make the same transitions twice; whoever sent one first left its mark in Redis. Redis
        away: send (an alert twice rather than none)."""
        changes = [n for n in notifications if not n.repeat]
        if not changes:
            return list(notifications)
        try:
            marks = await self.client.mget([SENT_KEY.format(transition_id(n.alert)) for n in changes])
        except redis.RedisError:
            return list(notifications)
        sent = {id(n) for n, mark in zip(changes, marks, strict=True) if mark is not None}
        if sent:
            metrics.ALERTS_ALREADY_ANNOUNCED.inc(len(sent))
            log.warning("alert transitions sent already (processed twice), left out", count=len(sent))
        return [n for n in notifications if id(n) not in sent]

    async def mark_sent(self) -> None:
        """Leave the marks of the transitions sent so far, once Kafka has acknowledged them: a mark of a
        record a crash kept from Kafka would silence its resend for good (called before each commit)."""
        if not self._unmarked:
            return
        sent, self._unmarked = self._unmarked, []
        try:
            await self.outbox.flush()
        except OutboxError:  # Kafka has not acknowledged them yet: marked at a later commit
            self._unmarked = sent + self._unmarked
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for transition in sent:
                pipe.set(SENT_KEY.format(transition), 1, ex=SENT_KEPT_S)
            await pipe.execute()
        except redis.RedisError as exc:  # without them a redelivery may send these again, nothing worse
            log.warning("marks of alerts sent not written", transitions=len(sent), error=repr(exc))

    def _record_redis(self, notifications: Sequence[Notification], attempt: int, at: datetime, error: str | None,
                      latency_s: float) -> None:  # fmt: skip
        """A row per notification and try of the Redis publish; a silenced one (not published) once, as such."""
        if self.history is None:
            return
        for n in notifications:
            if n.silenced:
                if error is None:
                    self.history.record(attempt_row(n, "redis", CHANNEL, 1, "silenced", at))
                continue
            outcome = "delivered" if error is None else "retried"
            self.history.record(attempt_row(n, "redis", CHANNEL, attempt, outcome, at, error=error,
                                        latency_s=round(latency_s, 6)))  # fmt: skip

    async def _to_redis(self, notifications: Sequence[Notification]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for n in notifications:
            alert = n.alert
            body = json.dumps(alert_event(alert, repeat=n.repeat, silenced=n.silenced))
            pipe.set(ALERT_KEY.format(alert["fingerprint"]), body)
            if alert["status"] == "FIRING":
                pipe.sadd(ACTIVE_SET, alert["fingerprint"])
            else:
                pipe.srem(ACTIVE_SET, alert["fingerprint"])
            if not n.silenced:
                pipe.publish(CHANNEL, body)
            # The dashboard's feed: every change, silenced ones too (it shows them as silenced); a repeat
            # is a reminder of a state already announced, not a change.
            if not n.repeat:
                fields = alert_fields(alert, n.silenced, SUMMARY_MAX)
                pipe.xadd(LIVE_STREAM, fields, maxlen=self.live_maxlen, approximate=True)
        pipe.scard(ACTIVE_SET)
        results = await pipe.execute()
        metrics.ALERTS_FIRING.set(results[-1])

    def _notify_receivers(self, notifications: Sequence[Notification]) -> None:
        groups: dict[tuple[str, tuple], list[Notification]] = defaultdict(list)
        for n in notifications:
            labels = n.alert["labels"]
            group = tuple((name, labels[name]) for name in self.rules.group_by if name in labels)
            groups[(n.alert["severity"], group)].append(n)
        for (severity, group), members in groups.items():
            for webhook in self.rules.receivers.get(severity, ()):
                self.webhooks.send(webhook, webhook_payload(severity, dict(group), members), members)


async def load_silences(client: redis.Redis) -> list[Silence]:
    silences = []
    for silence_id, body in (await client.hgetall(SILENCES)).items():
        data = json.loads(body)
        silences.append(Silence(silence_id.decode(), data["matchers"], data["expires_at_us"], data.get("comment", "")))
    return silences
