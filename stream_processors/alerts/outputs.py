"""Where alert state changes go: the alerts topic (Avro), Redis (pub/sub + active set), webhooks.

Redis layout:

| key | type | content |
| --- | --- | --- |
| `guardian:alerts:active` | set | fingerprints of FIRING alerts (silenced ones included) |
| `guardian:alert:{fingerprint}` | string | JSON of the alert's latest state, with `silenced` |
| `guardian:alerts` | pub/sub channel | JSON of each notification (not for silenced alerts) |
| `guardian:silences` | hash | silence id -> JSON {matchers, expires_at_us, comment} |
| `guardian:live` | stream | a `type=alert` entry per state change, silenced ones included (sinks/live_feed.py) |

Webhooks get Alertmanager's webhook JSON (version 4), one POST per group of alerts that
changed together (grouped by the rule set's `group_by` labels), per severity receiver,
retried with exponential backoff up to the receiver's `max_attempts`.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp
import redis.asyncio as redis

from guardian.logs import get_logger
from guardian.schemas.codec import EventCodec, load_alert_schema
from guardian.sinks.live_feed import DEFAULT_MAXLEN, LIVE_STREAM, alert_fields
from guardian.stream_processors import metrics
from guardian.stream_processors.alerts.engine import Notification, Silence
from guardian.stream_processors.alerts.rules import RuleSet, Webhook
from guardian.stream_processors.outbox import Outbox

log = get_logger(__name__)

ACTIVE_SET = "guardian:alerts:active"
ALERT_KEY = "guardian:alert:{}"
CHANNEL = "guardian:alerts"
SILENCES = "guardian:silences"
ALERTS_SUBJECT = "guardian.alerts.v1-value"
SUMMARY_MAX = 2_000  # characters: the summary quotes the breaker's reason, itself capped at 4,096


def alert_event(alert: dict) -> dict:
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
    }


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

    def __init__(self, concurrency: int = 16) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task] = set()

    def send(self, webhook: Webhook, payload: dict) -> None:
        task = asyncio.ensure_future(self._deliver(webhook, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, webhook: Webhook, payload: dict) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = str(webhook.url)
        delay = 0.2
        for attempt in range(1, webhook.max_attempts + 1):
            try:
                async with (
                    self._slots,
                    self._session.post(
                        url, json=payload, timeout=aiohttp.ClientTimeout(total=webhook.timeout_s)
                    ) as response,
                ):
                    if response.status < 300:
                        metrics.WEBHOOKS.labels("delivered").inc()
                        return True
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = repr(exc)
            if attempt < webhook.max_attempts:
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
    ) -> None:
        self.rules = rules
        self.live_maxlen = live_maxlen
        self.outbox = outbox
        self.topic = topic
        self.client = client
        self.webhooks = webhooks
        self.codec = EventCodec(load_alert_schema(), registry_url=registry_url, subject=ALERTS_SUBJECT)

    async def publish(self, notifications: Sequence[Notification]) -> None:
        """Topic and webhooks once; Redis retried until it takes them (the ingest loop waits meanwhile)."""
        if not notifications:
            return
        for n in notifications:
            alert = n.alert
            metrics.ALERTS.labels(alert["rule"], alert["severity"], alert["status"], str(n.repeat).lower()).inc()
            self.outbox.send(self.topic, self.codec.encode(alert_event(alert)), key=alert["fingerprint"].encode())
        self._notify_receivers([n for n in notifications if not n.silenced])
        delay = 0.05
        while True:
            try:
                await self._to_redis(notifications)
                return
            except redis.RedisError as exc:
                log.warning("alerts not in Redis yet; retrying", error=repr(exc), in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _to_redis(self, notifications: Sequence[Notification]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for n in notifications:
            alert = n.alert
            body = json.dumps({**alert_event(alert), "silenced": n.silenced, "repeat": n.repeat})
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
                self.webhooks.send(webhook, webhook_payload(severity, dict(group), members))


async def load_silences(client: redis.Redis) -> list[Silence]:
    silences = []
    for silence_id, body in (await client.hgetall(SILENCES)).items():
        data = json.loads(body)
        silences.append(Silence(silence_id.decode(), data["matchers"], data["expires_at_us"], data.get("comment", "")))
    return silences
