"""The wait for the alert state copy when partitions move (stream_processors/alerts/state_copy.py)."""

from __future__ import annotations

import asyncio
import time

from guardian.stream_processors.alerts import state_copy
from guardian.stream_processors.alerts.state_copy import behind, caught_up


def test_a_partition_is_behind_until_its_last_record_is_applied():
    ends = {0: (0, 10), 1: (5, 5), 2: (3, 8), 3: (0, 4)}  # 1: empty (compacted to nothing)
    applied = {0: 9, 2: None, 3: 1}.get
    assert behind(ends, applied) == {2: 5, 3: 2}
    assert behind(ends, {0: 9, 2: 7, 3: 3}.get) == {}


def test_the_wait_ends_when_the_copy_catches_up():
    applied = {0: 3}

    async def run() -> bool:
        async def changelog_consumer() -> None:  # Faust's recovery applying records meanwhile
            for offset in range(4, 10):
                await asyncio.sleep(0.01)
                applied[0] = offset

        consumer = asyncio.ensure_future(changelog_consumer())
        done = await caught_up(lambda: {0: (0, 10)}, applied.get, wait_s=5)
        await consumer
        return done

    began = time.monotonic()
    assert asyncio.run(run()) is True
    assert time.monotonic() - began < 2


def test_the_wait_is_bounded_and_kafka_away_does_not_stop_the_batch(monkeypatch):
    monkeypatch.setattr(state_copy, "POLL_S", 0.005)
    assert asyncio.run(caught_up(lambda: {0: (0, 10)}, {0: 3}.get, wait_s=0.1)) is False

    def unreachable() -> dict:
        raise RuntimeError("KafkaError{code=_TRANSPORT}")

    assert asyncio.run(caught_up(unreachable, {}.get, wait_s=0.1)) is False


def test_moved_partitions_are_judged_only_after_the_copy_caught_up():
    from guardian.stream_processors.alerts.hook import AlertHook

    calls: list[str] = []

    class Engine:
        silences = None
        log_id = ""

        def forget(self) -> None:
            calls.append("forget")

        def observe(self, batch, now_us):
            calls.append("observe")
            return []

        def tick(self, now_us, owned, partitions):
            return []

    class Client:
        async def hgetall(self, key):
            return {}

    async def state_current() -> None:
        calls.append("caught up")

    hook = AlertHook(Engine(), None, Client(), lambda: [0], 1, state_current=state_current)  # type: ignore[arg-type]
    asyncio.run(hook([object()]))  # type: ignore[list-item]
    hook.partitions_moved("assigned", [1])
    asyncio.run(hook([object()]))  # type: ignore[list-item]
    asyncio.run(hook([object()]))  # type: ignore[list-item]
    assert calls == ["caught up", "forget", "observe", "caught up", "forget", "observe", "observe"]
