"""Ordered, coalescing pipeline stages: how a slow store gets bigger batches instead of a queue.

Each sink (and the alert hooks) has one stage. Batches are submitted in the order they
were read; the stage works through them in that order, and every batch that queued up
while it was busy is merged into its next call. So a store that is fast gets small
batches (low latency) and a store that is slow gets large ones (high throughput),
without a fixed batch size or timer having to guess which it is.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class CoalescingStage(Generic[T]):
    def __init__(self, name: str, work: Callable[[list[T]], Awaitable[None]], max_items: int = 20_000) -> None:
        self.name = name
        self._work = work
        self._max_items = max_items
        self._queue: deque[tuple[list[T], asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(self, items: list[T]) -> asyncio.Future[None]:
        """Queue one batch; the future completes when `work` has been done for it (or fails with its error)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((items, done))
        self._wakeup.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return done

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                taken = [self._queue.popleft()]
                count = len(taken[0][0])
                while self._queue and count + len(self._queue[0][0]) <= self._max_items:
                    taken.append(self._queue.popleft())
                    count += len(taken[-1][0])
                merged = [item for items, _ in taken for item in items]
                try:
                    await self._work(merged)
                except Exception as exc:  # handed to whoever waits for these batches
                    for _, done in taken:
                        done.set_exception(exc)
                    continue
                for _, done in taken:
                    done.set_result(None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
