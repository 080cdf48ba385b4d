"""Where the fleet keeps the alerts firing now (Redis), as the API and the CLI read them.

The alert publisher (stream_processors/alerts/outputs.py) writes `guardian:alert:{fingerprint}` (JSON of
the alert's newest state, with `silenced` and `repeat`) and the set of firing fingerprints.
"""

from __future__ import annotations

import orjson
import redis.asyncio as redis

from guardian.sinks import silences

ACTIVE_SET = "guardian:alerts:active"
ALERT_KEY = "guardian:alert:{}"
CHANNEL = "guardian:alerts"  # pub/sub of every notified (not silenced) change


def mutes(matchers: dict[str, str], alert: dict) -> bool:
    """Whether a silence with these matchers mutes the alert: every matcher equals the alert's rule,
    severity or label of that name."""
    fields = {"rule": alert["rule"], "severity": alert["severity"], **alert["labels"]}
    return all(fields.get(name) == value for name, value in matchers.items())


async def active(client: redis.Redis) -> list[dict]:
    """The alerts firing now, P0 first, then oldest first; `silenced` when a silence in force mutes one
    now (the stored flag says only whether its last notification was muted)."""
    fingerprints = sorted(await client.smembers(ACTIVE_SET))
    bodies = await client.mget([ALERT_KEY.format(fp.decode() if isinstance(fp, bytes) else fp)
                                for fp in fingerprints]) if fingerprints else []  # fmt: skip
    alerts = [orjson.loads(body) for body in bodies if body]
    in_force = [s["matchers"] for s in await silences.active(client)]
    for alert in alerts:
        alert["silenced"] = bool(alert.get("silenced")) or any(mutes(m, alert) for m in in_force)
    return sorted((a for a in alerts if a.get("status") == "FIRING"), key=lambda a: (a["severity"], a["starts_at"]))
