"""GuardianProducer behaviour that needs no broker: refusing events it could never deliver, and
living through a disk that refuses the spool's writes."""

from __future__ import annotations

import pytest

from guardian.settings import Settings
from producers import EventTooLargeError, GuardianProducer, ProducerClosedError
from tests.integration.helpers import wait_for


def test_an_event_over_the_size_limit_is_refused_with_its_size(tmp_path):
    # No broker is needed: the check happens before anything is sent.
    with GuardianProducer(
        Settings(), producer_id="limit", spool_dir=tmp_path, bootstrap_servers="127.0.0.1:1"
    ) as producer:
        too_large = r"encodes to 2000\d+ bytes with its key; Kafka takes at most 999488"
        with pytest.raises(EventTooLargeError, match=too_large):
            producer.circuit_breaker("S0", "CLOSED", "OPEN", reason="x" * 2_000_000)
        producer.circuit_breaker("S0", "CLOSED", "OPEN", reason="x" * 900_000)  # under the limit
        stats = producer.stats()
        producer.close(0)
    assert stats["emitted"] == 1 and stats["spooled"] == stats["dropped"] == 0, stats


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
        assert stats["dropped"] == 100 and stats["spooled"] == 0, stats
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
