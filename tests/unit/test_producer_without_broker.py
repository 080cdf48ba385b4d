"""GuardianProducer behaviour that needs no broker: refusing events it could never deliver, and
living through a disk that refuses the spool's writes."""

from __future__ import annotations

import pytest

from guardian.producers import EventTooLargeError, GuardianProducer, ProducerClosedError
from guardian.schemas.errors import SchemaMismatchError
from guardian.schemas.validation import InvalidEventError
from guardian.settings import Settings
from tests.integration.helpers import wait_for


def test_an_event_over_the_size_limit_is_refused_with_its_size(tmp_path):
    # No broker is needed: the check happens before anything is sent. The length caps keep every
    # event far below Kafka's default limit, so the limit is set low here.
    with GuardianProducer(
        Settings(), producer_id="limit", spool_dir=tmp_path, bootstrap_servers="127.0.0.1:1",
        kafka_config={"message.max.bytes": 4000},
    ) as producer:  # fmt: skip
        too_large = r"encodes to 41\d\d bytes with its key; Kafka takes at most 3488"
        with pytest.raises(EventTooLargeError, match=too_large):
            producer.circuit_breaker("S0", "CLOSED", "OPEN", reason="x" * 4_096)
        producer.circuit_breaker("S0", "CLOSED", "OPEN", reason="x" * 3_000)  # under the limit
        stats = producer.stats()
        producer.close(0)
    assert stats["emitted"] == 1 and stats["spooled"] == stats["dropped"] == 0, stats


def _drift_at(event_time: int) -> dict:
    payload = {"metric": "m", "expected": 0.0, "observed": 0.0, "drift_score": 0.0, "window_seconds": 1}
    return {"symbol": "S0", "detector": "DRIFT_MONITOR", "event_time": event_time,
            "payload": ("io.guardian.events.Drift", payload)}  # fmt: skip


def _spike(**kw: object) -> dict:
    return {"observed_latency_us": 1, "threshold_us": 1, "p50_us": 1, "p99_us": 1, "p999_us": 1, **kw}


UNSTORABLE = [
    (lambda p: p.circuit_breaker("S\x00", "CLOSED", "OPEN"), "no_nul", "symbol"),
    (lambda p: p.circuit_breaker("S" * 65, "CLOSED", "OPEN"), "max_length", "symbol"),
    (lambda p: p.circuit_breaker("S0", "CLOSED", "OPEN", reason="r" * 4097), "max_length", "reason"),
    (lambda p: p.latency_spike("S0", **_spike(venue="X\x00")), "no_nul", "venue"),
    (lambda p: p.drift("S0", metric="m", expected=0, observed=1, drift_score=float("nan")), "finite", "drift_score"),
    (lambda p: p.drift("S0", metric="m", expected=float("inf"), observed=1, drift_score=1), "finite", "expected"),
    (lambda p: p.emit(_drift_at(0)), "time_window", "event_time"),
    (lambda p: p.emit(_drift_at(2**62)), "time_window", "event_time"),
]


@pytest.mark.parametrize(("call", "rule", "field"), UNSTORABLE)
def test_an_unstorable_event_is_refused_naming_the_field_and_the_rule(tmp_path, call, rule, field):
    with GuardianProducer(Settings(), producer_id="rules", spool_dir=tmp_path, bootstrap_servers="127.0.0.1:1") as p:
        with pytest.raises(InvalidEventError, match=rf"^{field}: .* \(rule {rule}\)$") as refused:
            call(p)
        assert (refused.value.rule, refused.value.field) == (rule, field)
        assert isinstance(refused.value, SchemaMismatchError)
        p.circuit_breaker("S0", "CLOSED", "OPEN")  # a refusal uses up no sequence number
        stats = p.stats()
        p.close(0)
    assert stats["emitted"] == 1, stats


def test_a_disk_that_refuses_the_spool_drops_counted_events_and_never_raises(tmp_path):
    # Segments larger than any disk here: every allocation fails, like a full disk.
    with GuardianProducer(
        Settings(),
        producer_id="full-disk",
        spool_dir=tmp_path,
        bootstrap_servers="127.0.0.1:1",
        spool_after_s=0.05,
        spool_segment_bytes=1 << 50,
    ) as producer:
        producer.drift("S0", metric="m", expected=1.0, observed=1.5, drift_score=0.5)  # waits in memory
        wait_for(lambda: producer.stats()["spooling"] == 1, 10, "the producer to spool")
        for _ in range(100):
            producer.drift("S0", metric="m", expected=1.0, observed=1.5, drift_score=0.5)
        stats = producer.stats()
        # The first event waited in librdkafka's memory; once Kafka had acknowledged nothing for
        # spool_after_s it was moved to the front of the spool (its own small write). The 100 taken while
        # the disk refused every new segment are dropped and counted: every event is accounted for.
        assert stats["dropped"] == 100 and stats["emitted"] == stats["dropped"] + stats["spooled"], stats
        assert producer._thread.is_alive()  # the thread that would drain once the disk has room
        producer.close(0)


def test_emit_after_close_is_refused_not_lost(tmp_path):
    producer = GuardianProducer(Settings(), producer_id="closed", spool_dir=tmp_path, bootstrap_servers="127.0.0.1:1")
    producer.drift("S0", metric="m", expected=1.0, observed=1.5, drift_score=0.5)
    producer.close(0)
    with pytest.raises(ProducerClosedError, match="producer closed is closed"):
        producer.drift("S0", metric="m", expected=1.0, observed=1.5, drift_score=0.5)
    stats = producer.stats()
    # Not taken: only the first event counts, and close() put it in the spool. (queue_depth is no
    # witness here: librdkafka also counts its own pending error events, "all brokers down".)
    assert stats["emitted"] == 1 and stats["spool_records"] == 1 and stats["spooled"] == 1, stats


def test_the_default_identity_is_stable_per_program_and_each_run_has_a_higher_epoch(tmp_path):
    settings = Settings(spool_dir=tmp_path)
    offline = {"bootstrap_servers": "127.0.0.1:1"}
    first = GuardianProducer(settings, **offline)
    second = GuardianProducer(settings, **offline)  # the same program twice on one host
    assert first.producer_id.endswith("-pytest") and second.producer_id == f"{first.producer_id}-2"
    epochs = [first.epoch]
    first.close(0)
    second.close(0)
    again = GuardianProducer(settings, **offline)  # a restart finds the same spool
    assert again.producer_id == first.producer_id and again.epoch > epochs[0]
    again.circuit_breaker("S0", "CLOSED", "OPEN")
    assert again.stats()["emitted"] == 1
    again.close(0)
