"""What a verification covers: per partition, the offsets from a time on up to where the fleet committed.

Everything below the fleet's committed offset has been written to both stores (a worker commits only
after its sinks wrote the batch), so that is where Kafka and the stores must agree. The verifier waits
a little (`settle_s`) for the fleet to commit the end of each partition as it was when verification
began; what the fleet has not committed by then is counted as unread, not as missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from guardian.kafka_lookup import admin_client, committed, partitions_of, probe, watermarks
from guardian.settings import Settings
from guardian.stream_processors.replay.plan import offsets_at

POLL_S = 0.25


@dataclass
class Window:
    start_s: float  # verification covers records timestamped from here
    taken_s: float  # when the ends were taken
    ranges: dict[int, tuple[int, int]]  # partition -> [first offset, the fleet's commit)
    unread: dict[int, int] = field(default_factory=dict)  # partition -> records the fleet had not committed
    never_committed: list[int] = field(default_factory=list)  # partitions with records but no commit

    @property
    def events(self) -> int:
        return sum(end - start for start, end in self.ranges.values())


def take_window(settings: Settings, since_s: float, settle_s: float) -> Window:
    topic, group = settings.events_topic, settings.worker_group
    consumer, trap = probe(settings, "verify")
    admin, _ = admin_client(settings)
    try:
        partitions = partitions_of(consumer, trap, settings, topic)
        taken = time.time()
        start_s = taken - since_s
        starts = offsets_at(consumer, topic, partitions, int(start_s * 1000))
        highs = {p: watermarks(consumer, topic, p)[1] for p in partitions}
        deadline = time.monotonic() + settle_s
        while True:
            commits = committed(admin, group, topic)
            behind = [p for p in partitions if highs[p] > starts[p] and commits.get(p, -1) < highs[p]]
            if not behind or time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        window = Window(start_s, taken, {})
        for p in partitions:
            start, high = starts[p], highs[p]
            if high <= start:
                continue
            if p not in commits:
                window.never_committed.append(p)
                window.unread[p] = high - start
                continue
            end = min(high, max(start, commits[p]))
            if end > start:
                window.ranges[p] = (start, end)
            if high > end:
                window.unread[p] = high - end
        return window
    finally:
        consumer.close()
