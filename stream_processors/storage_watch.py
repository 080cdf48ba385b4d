"""Storage jobs watched by the worker: metrics, and a P1 alert while one fails.

The worker that runs the hourly storage upkeep (sinks/storage.py) reads the jobs' health after
it: TimescaleDB's policy jobs or native mode's maintenance. A job whose last run failed fires the
P1 alert `storage_job_failing` (labels: job), through the same outputs as the event rules
(alerts topic, Redis, webhooks); its next success resolves it. The alert's state lives in Redis,
so a restart or another worker neither repeats nor forgets it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import redis.asyncio as redis

from guardian.sinks.storage import JobHealth
from guardian.stream_processors import metrics
from guardian.stream_processors.alerts.engine import Notification, fingerprint
from guardian.stream_processors.alerts.outputs import ALERT_KEY, load_silences

RULE = "storage_job_failing"
SEVERITY = "P1"


def export(health: Sequence[JobHealth]) -> None:
    for job in health:
        metrics.STORAGE_JOB_FAILING.labels(job.name).set(1 if job.failing else 0)
        metrics.STORAGE_JOB_LAST_SUCCESS.labels(job.name).set(job.last_success.timestamp() if job.last_success else 0)


def _alert(job: JobHealth, firing: bool, starts_at: int, now_us: int) -> dict:
    labels = {"job": job.name}
    return {
        "fingerprint": fingerprint(RULE, labels),
        "rule": RULE,
        "severity": SEVERITY,
        "status": "FIRING" if firing else "RESOLVED",
        "labels": labels,
        "summary": f"storage job {job.name} failed: {job.last_error or 'no message'}"
        if firing
        else f"storage job {job.name} succeeded again",
        "starts_at": starts_at,
        "ends_at": None if firing else now_us,
        "event_id": None,
    }


async def notifications(health: Sequence[JobHealth], client: redis.Redis) -> list[Notification]:
    """The alert changes the jobs' health calls for, compared with what Redis says was told."""
    out = []
    now_us = time.time_ns() // 1000
    silences = await load_silences(client) if health else []
    for job in health:
        raw = await client.get(ALERT_KEY.format(fingerprint(RULE, {"job": job.name})))
        told = json.loads(raw) if raw else None
        firing_now = told is not None and told["status"] == "FIRING"
        if job.failing and not firing_now:
            failed_at = job.last_failure.timestamp() if job.last_failure else now_us / 1e6
            alert = _alert(job, True, int(failed_at * 1_000_000), now_us)
        elif firing_now and not job.failing:
            alert = _alert(job, False, told["starts_at"], now_us)
        else:
            continue
        out.append(Notification(alert, silenced=any(s.matches(alert, now_us) for s in silences)))
    return out
