"""CPU placement: the cpuset list syntax, and the producer's network threads landing where asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from guardian.cpus import idle_priority_threads, parse_cpu_list, running_on, usable_cpus
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


# Run in a process of its own: in the full suite, other tests' Kafka clients (an API's lag probe finishing in
# an executor thread, a fixture's producer) start librdkafka threads in pytest's process at any moment, and
# they would look like this producer's.
PLACEMENT_CHECK = """
import json, os, sys
from pathlib import Path
from guardian.cpus import usable_cpus
from guardian.producers import GuardianProducer
from guardian.settings import Settings

def thread_cpus():
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            out[int(task.name)] = ((task / "comm").read_text().strip(), sorted(os.sched_getaffinity(int(task.name))))
        except FileNotFoundError:
            pass
    return out

caller = usable_cpus()
io_cpus = frozenset({max(caller)})
existing = set(thread_cpus())
producer = GuardianProducer(Settings(), producer_id="cpus", spool_dir=Path(sys.argv[1]),
                            bootstrap_servers="127.0.0.1:1", io_cpus=io_cpus)
threads = thread_cpus()
print(json.dumps({"io_cpus": sorted(io_cpus), "caller_before": sorted(caller), "caller_after": sorted(usable_cpus()),
                  "producer_thread": threads[producer._thread.native_id][1],
                  "librdkafka": [cpus for tid, (name, cpus) in threads.items()
                                 if name.startswith("rdk:") and tid not in existing]}))
producer.close(timeout=0)
"""


def test_the_producers_network_threads_run_on_the_io_cpus_and_the_caller_stays_put(tmp_path):
    result = subprocess.run([sys.executable, "-c", PLACEMENT_CHECK, str(tmp_path)], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["librdkafka"], seen
    assert all(cpus == seen["io_cpus"] for cpus in seen["librdkafka"]), seen
    assert seen["producer_thread"] == seen["io_cpus"]
    assert seen["caller_after"] == seen["caller_before"]


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
