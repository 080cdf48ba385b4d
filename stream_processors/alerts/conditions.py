"""Alerts on conditions the fleet itself watches (a failing storage job, Kafka and the stores disagreeing),
beside the rules on events.

A watcher says, for each thing it watches, whether it is bad now; this turns that into FIRING and
RESOLVED notifications, compared with what Redis says was told last (the alert keys the event rules'
publisher writes too), so a restart or another worker neither repeats nor forgets an alert. They go
out through the same outputs as the event rules' (alerts topic, Redis, webhooks), silences included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as redis

from guardian.stream_processors.alerts.engine import Notification, fingerprint
from guardian.stream_processors.alerts.outputs import ALERT_KEY, load_silences


@dataclass(frozen=True)
class Condition:
    labels: dict[str, str]
    bad: bool
    summary: str  # what is wrong while bad, what is right again otherwise
    since_us: int | None = None  # when it went bad, if known (now otherwise)


def _alert(rule: str, severity: str, condition: Condition, starts_at: int, now_us: int) -> dict:
    return {
        "fingerprint": fingerprint(rule, condition.labels),
        "rule": rule,
        "severity": severity,
        "status": "FIRING" if condition.bad else "RESOLVED",
        "labels": condition.labels,
        "summary": condition.summary,
        "starts_at": starts_at,
        "ends_at": None if condition.bad else now_us,
        "event_id": None,
        "last_notified_us": now_us,  # told now: the notification's time, part of its key (sinks/alert_history.py)
    }


async def notifications(rule: str, severity: str, conditions: Sequence[Condition], client: redis.Redis
                        ) -> list[Notification]:  # fmt: skip
    """The alert changes the conditions call for, compared with what was told."""
    out = []
    now_us = time.time_ns() // 1000
    silences = await load_silences(client) if conditions else []
    for condition in conditions:
        raw = await client.get(ALERT_KEY.format(fingerprint(rule, condition.labels)))
        told = json.loads(raw) if raw else None
        firing_now = told is not None and told["status"] == "FIRING"
        if condition.bad and not firing_now:
            alert = _alert(rule, severity, condition, condition.since_us or now_us, now_us)
        elif firing_now and not condition.bad:
            alert = _alert(rule, severity, condition, told["starts_at"], now_us)
        else:
            continue
        out.append(Notification(alert, silenced=any(s.matches(alert, now_us) for s in silences)))
    return out
