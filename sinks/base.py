"""The one contract every sink follows, and the retry loop that makes a store outage harmless.

A sink takes a whole batch of decoded events and writes it idempotently. The worker
acknowledges a batch's Kafka offsets only after every sink's `write` returned, so a
crash between the two only causes a redelivery, which idempotence absorbs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from guardian.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A decoded event with where it came from, as the sinks need it."""

    event: dict
    partition: int
    offset: int


class Sink(Protocol):
    name: str

    async def start(self) -> None: ...
    async def write(self, batch: Sequence[StoredEvent]) -> None: ...
    async def close(self) -> None: ...


async def write_with_retry(
    sink: Sink,
    batch: Sequence[StoredEvent],
    on_down: Callable[[str, bool], None] = lambda name, down: None,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """Write until it succeeds (exponential backoff, capped at 5 s). Returns False only if asked to stop.

    While a store is down the worker stays here, so it consumes nothing more (Kafka keeps the
    events), reports the outage through `on_down`, and stays alive for health probes.
    """
    delay = 0.05
    failures = 0
    while True:
        try:
            await sink.write(batch)
        except Exception as exc:  # any store error: the batch stays unacknowledged and is retried
            failures += 1
            if failures == 1 or failures % 20 == 0:
                log.warning("sink write failed; retrying", sink=sink.name, failures=failures, error=repr(exc))
            on_down(sink.name, True)
            if should_stop():
                return False
            await sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        if failures:
            log.info("sink recovered", sink=sink.name, failures=failures)
            on_down(sink.name, False)
        return True
