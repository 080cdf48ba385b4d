"""Wait until this worker's copy of the alert table holds what the other workers wrote before now.

Every worker holds the whole alert table (a Faust GlobalTable), kept current by reading the table's
changelog topic, which the workers write. When a partition of the events topic moves here (its owner
died or left), its redelivered events must be judged on the state that owner left: a copy a few
seconds old lacks the transitions the owner already notified, and they were notified a second time
(641 doubled alerts over 10 worker kills, docs/benchmarks.md#faults). So, on every move, the ingest
loop waits until the copy has applied each changelog partition up to its end offset of that moment.
The wait is bounded: a copy that cannot catch up (its own consumer rebalancing) costs a warning and
possibly a repeated alert, never a stalled fleet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from guardian.logs import get_logger
from guardian.stream_processors import metrics

log = get_logger(__name__)

WAIT_S = 10.0
POLL_S = 0.01


def behind(ends: Mapping[int, tuple[int, int]], applied: Callable[[int], int | None]) -> dict[int, int]:
    """partition -> records not applied yet, for the partitions whose last record (end - 1) the copy has
    not applied. `ends`: partition -> (low, high) watermarks; `applied`: partition -> highest offset applied."""
    late = {}
    for partition, (low, high) in ends.items():
        if high <= low:
            continue  # empty (or compacted away to nothing): nothing to wait for
        done = applied(partition)
        last_applied = low - 1 if done is None else max(done, low - 1)
        if last_applied < high - 1:
            late[partition] = high - 1 - last_applied
    return late


async def caught_up(
    ends: Callable[[], Mapping[int, tuple[int, int]]],
    applied: Callable[[int], int | None],
    wait_s: float = WAIT_S,
) -> bool:
    """Whether the copy applied everything written before the call within `wait_s` (`ends` blocks: a thread)."""
    began = time.monotonic()
    try:
        target = await asyncio.to_thread(ends)
    except Exception as exc:  # Kafka away: the batch goes on, as it would have without this wait
        log.warning("alert state copy: changelog end offsets unknown; going on", error=repr(exc))
        metrics.ALERT_STATE_CATCH_UP_SECONDS.labels("failed").observe(time.monotonic() - began)
        return False
    while late := behind(target, applied):
        if time.monotonic() - began >= wait_s:
            log.warning("alert state copy still behind its changelog; going on (an alert may be sent twice)",
                        records_behind=sum(late.values()), partitions=sorted(late), waited_s=wait_s)  # fmt: skip
            metrics.ALERT_STATE_CATCH_UP_SECONDS.labels("gave_up").observe(time.monotonic() - began)
            return False
        await asyncio.sleep(POLL_S)
    waited = time.monotonic() - began
    metrics.ALERT_STATE_CATCH_UP_SECONDS.labels("caught_up").observe(waited)
    if waited > 1.0:
        log.info("alert state copy caught up with its changelog", waited_s=round(waited, 3))
    return True
