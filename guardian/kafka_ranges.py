"""Reading offset ranges of a topic to their end: checkpoint readers, restore()'s tail, hot view rebuilds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

WAIT_S = 0.05  # consume(n, wait) returns after `wait` unless n records came: short, so a range's end does not idle


def consume_ranges(
    consumer: Any, topic: str, ranges: dict[int, tuple[int, int]], *, deadline: float | None = None,
    batch: int = 5000, wait_s: float = WAIT_S,
) -> Iterator[list[Any]]:  # fmt: skip
    """Assign partition -> [start, end) of `topic` to `consumer` and yield its records in batches until each
    partition reached its end. Offsets may have gaps (compaction, transaction markers): a partition whose
    consumer position passed its end is done even if no record carried the last offset. Raises
    TimeoutError once `deadline` (monotonic) passes."""
    from confluent_kafka import TopicPartition

    left = {p: end for p, (start, end) in ranges.items() if end > start}
    if not left:
        return
    consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in left])
    while left:
        wait = wait_s
        if deadline is not None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(left)} partition(s) of {topic} not read to their end in time")
            wait = min(wait_s, deadline - time.monotonic())
        messages = consumer.consume(batch, max(0.0, wait))
        wanted = []
        for message in messages:
            partition = message.partition()
            if message.error() or partition not in left or message.offset() >= left[partition]:
                continue
            wanted.append(message)
            if message.offset() + 1 >= left[partition]:
                del left[partition]
        if not messages:
            for position in consumer.position([TopicPartition(topic, p) for p in left]):
                if position.offset >= left[position.partition]:
                    del left[position.partition]
        if wanted:
            yield wanted
