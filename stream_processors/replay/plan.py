"""Which offsets of the events topic a time range covers, partition by partition.

Kafka finds offsets by record timestamp (`offsets_for_times`: the first record at or after a time).
A range that starts before what retention still holds is refused, with the oldest time that is
complete in every partition, instead of silently replaying less than asked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from guardian.cli_kit import iso
from guardian.errors import GuardianError
from guardian.kafka_lookup import partitions_of, probe, watermarks
from guardian.kafka_ranges import consume_ranges
from guardian.settings import Settings


class RangeGoneError(GuardianError):
    """Part of the asked range is older than the topic still holds."""


@dataclass(frozen=True)
class PartitionPlan:
    partition: int
    start: int  # first offset to read
    end: int  # first offset not to read
    low: int  # the partition's oldest offset still held
    high: int  # its end when planned

    @property
    def events(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class OffsetPlan:
    topic: str
    from_ms: int
    to_ms: int | None
    partitions: list[PartitionPlan] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(p.events for p in self.partitions)

    def ranges(self) -> dict[int, tuple[int, int]]:
        return {p.partition: (p.start, p.end) for p in self.partitions if p.events}


def offsets_at(consumer: Consumer, topic: str, partitions: list[int], at_ms: int) -> dict[int, int]:
    """partition -> first offset with a timestamp at or after `at_ms` (the end when none is)."""
    found = consumer.offsets_for_times([TopicPartition(topic, p, at_ms) for p in partitions], timeout=10)
    offsets = {}
    for tp in found:
        offsets[tp.partition] = tp.offset if tp.offset >= 0 else watermarks(consumer, topic, tp.partition)[1]
    return offsets


def first_timestamps(consumer: Consumer, topic: str, offsets: dict[int, int]) -> dict[int, int]:
    """partition -> timestamp (ms) of the record at the given offset."""
    stamps: dict[int, int] = {}
    for batch in consume_ranges(consumer, topic, {p: (o, o + 1) for p, o in offsets.items()},
                                deadline=time.monotonic() + 30):  # fmt: skip
        for message in batch:
            stamps[message.partition()] = message.timestamp()[1]
    return stamps


def plan_range(settings: Settings, from_ms: int, to_ms: int | None, topic: str | None = None) -> OffsetPlan:
    """The offsets [start, end) of each partition that hold records timestamped in [from_ms, to_ms)
    (to the current end without `to_ms`). Raises RangeGoneError when retention already deleted part of it."""
    topic = topic or settings.events_topic
    if to_ms is not None and to_ms <= from_ms:
        raise GuardianError("the range is empty: --to must be after --from")
    consumer, trap = probe(settings, "replay-plan")
    try:
        partitions = partitions_of(consumer, trap, settings, topic)
        starts = offsets_at(consumer, topic, partitions, from_ms)
        ends = offsets_at(consumer, topic, partitions, to_ms) if to_ms is not None else {}
        plan = OffsetPlan(topic, from_ms, to_ms)
        trimmed = {}
        for p in partitions:
            low, high = watermarks(consumer, topic, p)
            start = min(max(starts[p], low), high)
            end = min(ends.get(p, high), high)
            plan.partitions.append(PartitionPlan(p, start, max(start, end), low, high))
            if low > 0 and start == low < high:  # records before `low` were deleted: were they in range?
                trimmed[p] = low
        if trimmed:
            oldest = first_timestamps(consumer, topic, trimmed)
            gone = {p: ts for p, ts in oldest.items() if ts > from_ms}
            if gone:
                complete_from = max(gone.values())
                raise RangeGoneError(
                    f"{topic} no longer holds events from before {_iso_ms(complete_from)} in partition(s) "
                    f"{', '.join(map(str, sorted(gone)))} (retention deleted them); the oldest time every partition "
                    f"still holds is {_iso_ms(complete_from)}: replay from then or later"
                )
        return plan
    finally:
        consumer.close()


def _iso_ms(ms: int) -> str:
    return iso(ms / 1000)
