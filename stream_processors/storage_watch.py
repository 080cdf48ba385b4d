"""Storage jobs watched by the worker: metrics, and a P1 alert while one fails.

The worker that runs the hourly storage upkeep (sinks/storage.py) reads the jobs' health after
it: TimescaleDB's policy jobs or native mode's maintenance. A job whose last run failed fires the
P1 alert `storage_job_failing` (labels: job), through the same outputs as the event rules
(alerts topic, Redis, webhooks); its next success resolves it (alerts/conditions.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as redis

from guardian.sinks.storage import JobHealth
from guardian.stream_processors import metrics
from guardian.stream_processors.alerts import conditions as conditions_alerts
from guardian.stream_processors.alerts.conditions import Condition
from guardian.stream_processors.alerts.engine import Notification

RULE = "storage_job_failing"
SEVERITY = "P1"


def export(health: Sequence[JobHealth]) -> None:
    for job in health:
        metrics.STORAGE_JOB_FAILING.labels(job.name).set(1 if job.failing else 0)
        metrics.STORAGE_JOB_LAST_SUCCESS.labels(job.name).set(job.last_success.timestamp() if job.last_success else 0)


async def notifications(health: Sequence[JobHealth], client: redis.Redis) -> list[Notification]:
    """The alert changes the jobs' health calls for, compared with what Redis says was told."""
    conditions = [
        Condition({"job": job.name}, job.failing,
                  f"storage job {job.name} failed: {job.last_error or 'no message'}" if job.failing
                  else f"storage job {job.name} succeeded again",
                  int(job.last_failure.timestamp() * 1_000_000) if job.last_failure else None)
        for job in health
    ]  # fmt: skip
    return await conditions_alerts.notifications(RULE, SEVERITY, conditions, client)
