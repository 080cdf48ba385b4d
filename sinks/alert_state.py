"""Where the fleet keeps the alerts firing now (Redis), as the API and the CLI read them.

The alert publisher (stream_processors/alerts/outputs.py) writes `guardian:alert:{fingerprint}` (JSON of
the alert's newest state, with `silenced` and `repeat`) and the set of firing fingerprints.
"""

from __future__ import annotations

import orjson
import redis.asyncio as redis

ACTIVE_SET = "guardian:alerts:active"
ALERT_KEY = "guardian:alert:{}"
CHANNEL = "guardian:alerts"  # pub/sub of every notified (not silenced) change


async def active(client: redis.Redis) -> list[dict]:
    """The alerts firing now, P0 first, then oldest first."""
    fingerprints = sorted(await client.smembers(ACTIVE_SET))
    bodies = await client.mget([ALERT_KEY.format(fp.decode() if isinstance(fp, bytes) else fp)
                                for fp in fingerprints]) if fingerprints else []  # fmt: skip
    alerts = [orjson.loads(body) for body in bodies if body]
    return sorted((a for a in alerts if a.get("status") == "FIRING"), key=lambda a: (a["severity"], a["starts_at"]))
