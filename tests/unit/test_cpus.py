"""CPU placement: the cpuset list syntax, and the producer's network threads landing where asked."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from guardian.cpus import idle_priority_threads, parse_cpu_list, running_on, usable_cpus
from guardian.producers import GuardianProducer
from guardian.settings import Settings
from tests.integration.helpers import wait_for


@pytest.mark.parametrize(
    ("text", "cpus"), [("1", {1}), ("0,2", {0, 2}), ("2-4,8", {2, 3, 4, 8}), (" 3 , 5-5 ", {3, 5})]
)
def test_cpu_lists_parse_as_the_kernel_writes_them(text, cpus):
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize("text", ["", "a", "1-", "4-2", "1;2", "-1"])
def test_a_bad_cpu_list_is_a_config_error_naming_the_variable(text, monkeypatch):
    monkeypatch.setenv("GUARDIAN_PRODUCER_IO_CPUS", text)
    with pytest.raises(ValidationError, match="not a CPU list"):
        Settings()


def test_running_on_restores_the_callers_cpus_and_names_cpus_that_do_not_exist():
    before = usable_cpus()
    with running_on(frozenset({max(before)})):
        assert usable_cpus() == {max(before)}
    assert usable_cpus() == before
    with pytest.raises(ValueError, match=r"cannot run on CPUs \[4096\]"), running_on(frozenset({4096})):
        pass
    assert usable_cpus() == before


def _thread_cpus() -> dict[int, tuple[str, frozenset[int]]]:
    """Every thread of this process: thread id -> (name, the CPUs it may run on)."""
    threads = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            threads[int(task.name)] = (
                (task / "comm").read_text().strip(),
                frozenset(os.sched_getaffinity(int(task.name))),
            )
    return threads


def test_the_producers_network_threads_run_on_the_io_cpus_and_the_caller_stays_put(tmp_path):
    caller = usable_cpus()
    io_cpus = frozenset({max(caller)})
    existing = set(_thread_cpus())
    producer = GuardianProducer(
        Settings(), producer_id="cpus", spool_dir=tmp_path, bootstrap_servers="127.0.0.1:1", io_cpus=io_cpus
    )
    try:
        threads = _thread_cpus()
        librdkafka = {
            tid: cpus for tid, (name, cpus) in threads.items() if name.startswith("rdk:") and tid not in existing
        }
        assert librdkafka, threads
        assert all(cpus == io_cpus for cpus in librdkafka.values()), threads
        assert threads[producer._thread.native_id][1] == io_cpus
        assert usable_cpus() == caller
    finally:
        producer.close(timeout=0)


def test_idle_priority_moves_only_the_named_threads_of_a_process():
    sleeper = subprocess.Popen(["sleep", "30"])  # one thread, named "sleep" once it has exec'd
    comm = Path(f"/proc/{sleeper.pid}/comm")
    try:
        wait_for(lambda: comm.read_text().strip() == "sleep", 10, "the child to exec sleep")  # a fork is "python"
        assert idle_priority_threads(sleeper.pid, "no-such-thread") == []
        assert os.sched_getscheduler(sleeper.pid) == os.SCHED_OTHER
        assert idle_priority_threads(sleeper.pid, "slee") == ["sleep"]
        assert os.sched_getscheduler(sleeper.pid) == os.SCHED_IDLE
    finally:
        sleeper.kill()
        sleeper.wait()
