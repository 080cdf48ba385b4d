"""The one contract every sink follows, and the retry loop that makes a store outage harmless.

A sink takes a whole batch of decoded events and writes it idempotently. The worker
acknowledges a batch's Kafka offsets only after every sink's `write` returned, so a
crash between the two only causes a redelivery, which idempotence absorbs.

Errors are of two kinds, told apart by the sink's `is_permanent(error)`:
- transient (connection refused or lost, timeouts, a server restarting): the batch is retried
  with backoff until the store takes it, for as long as it takes;
- permanent (the data itself: a value the store cannot hold): retrying can never succeed, so
  `write_isolating` splits the batch in halves and writes each, as Debezium's JDBC sink does,
  until the rows that fail are alone; those go to the dead-letter topic with the store's error,
  the rest is stored. One poison row among n costs about 2·log2(n) extra writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from guardian.errors import GuardianError
from guardian.logs import get_logger
from guardian.schemas.events import StoredEvent

log = get_logger(__name__)


class PermanentWriteError(GuardianError):
    """A store refused a batch for its content; the same write can never succeed."""

    def __init__(self, sink: str, cause: Exception) -> None:
        super().__init__(f"{sink}: {type(cause).__name__}: {cause}")
        self.sink = sink


class Sink(Protocol):
    name: str

    async def start(self) -> None: ...
    async def write(self, batch: Sequence[StoredEvent]) -> object: ...  # what it did, for replay's summary
    async def close(self) -> None: ...
    def is_permanent(self, error: Exception) -> bool: ...


async def write_with_retry(
    sink: Sink,
    batch: Sequence[StoredEvent],
    on_down: Callable[[str, bool], None] = lambda name, down: None,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """Write until it succeeds (exponential backoff, capped at 5 s). Returns False only if asked to stop;
    raises PermanentWriteError at once for an error the sink calls permanent.

    While a store is down the worker stays here, so it consumes nothing more (Kafka keeps the
    events), reports the outage through `on_down`, and stays alive for health probes.
    """
    delay = 0.05
    failures = 0
    while True:
        try:
            await sink.write(batch)
        except Exception as exc:  # any store error: the batch stays unacknowledged and is retried
            if sink.is_permanent(exc):
                if failures:
                    on_down(sink.name, False)  # the store answers: it is the data
                raise PermanentWriteError(sink.name, exc) from exc
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


async def write_isolating(
    sink: Sink,
    batch: Sequence[StoredEvent],
    on_poison: Callable[[StoredEvent, PermanentWriteError], None],
    on_down: Callable[[str, bool], None] = lambda name, down: None,
) -> int:
    """Write `batch`; rows the store refuses for good are split out and handed to `on_poison` (the
    worker dead-letters them). Returns how many were. Transient errors are retried as ever."""
    try:
        await write_with_retry(sink, batch, on_down)
        return 0
    except PermanentWriteError as error:
        if len(batch) == 1:
            log.error("store refused an event for good; dead-lettered", sink=sink.name, error=str(error))
            on_poison(batch[0], error)
            return 1
    middle = len(batch) // 2
    return await write_isolating(sink, batch[:middle], on_poison, on_down) + await write_isolating(
        sink, batch[middle:], on_poison, on_down
    )
