"""CPU placement: which cores a thread, and the threads it starts, run on.

A trading host keeps its hot thread on a core of its own. The producer's network threads
(librdkafka's and Guardian's delivery thread) are started inside the library, so the host
cannot place them itself; `running_on` lets the library do it. Linux threads inherit their
creator's CPU affinity, so threads started inside the block keep the set after it ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def parse_cpu_list(text: str) -> frozenset[int]:
    """'1', '0,2' or '2-5,8' (the kernel's cpuset list syntax) -> the CPU numbers."""
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{text!r} is not a CPU list: use numbers and ranges like '1' or '0,2-3'")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"{text!r} is not a CPU list: range {part} runs backwards")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def usable_cpus() -> frozenset[int]:
    """The CPUs the calling thread may run on now."""
    if not hasattr(os, "sched_getaffinity"):
        raise OSError("CPU placement needs Linux (os.sched_setaffinity); leave the CPU settings unset here")
    return frozenset(os.sched_getaffinity(0))


@contextmanager
def running_on(cpus: frozenset[int] | None) -> Iterator[None]:
    """Run the calling thread, and every thread it starts meanwhile, on `cpus`; None = no change."""
    if cpus is None:
        yield
        return
    usable_cpus()  # Linux only: a clear error elsewhere
    previous = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, cpus)  # pid 0 = the calling thread only
    except OSError as error:  # EINVAL: none of them exists or the cgroup allows none of them
        raise ValueError(
            f"cannot run on CPUs {sorted(cpus)}: {error.strerror} (this machine has {os.cpu_count()})"
        ) from None
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def threads_named(pid: int, name_contains: str) -> list[tuple[int, str]]:
    """(thread id, name) of the threads of process `pid` whose name contains `name_contains` (Linux /proc)."""
    found = []
    for task in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as comm:
                name = comm.read().strip()
        except (ProcessLookupError, FileNotFoundError):  # the thread ended meanwhile
            continue
        if name_contains in name:
            found.append((int(task), name))
    return found


def idle_priority_threads(pid: int, name_contains: str) -> list[str]:
    """Move the threads of process `pid` whose name contains `name_contains` to SCHED_IDLE: they run
    only on CPU time nothing else wants. Returns the names of the threads moved. Linux only; an
    unprivileged user may do this to its own processes (lowering priority needs no capability)."""
    if not hasattr(os, "SCHED_IDLE"):
        raise OSError("thread priorities need Linux (os.sched_setscheduler)")
    moved = []
    for tid, name in threads_named(pid, name_contains):
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        moved.append(name)
    return moved
