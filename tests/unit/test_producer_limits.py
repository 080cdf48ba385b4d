"""emit() refuses an event Kafka could never take, before it reaches the queue or the spool."""

from __future__ import annotations

import pytest

from guardian.settings import Settings
from producers import EventTooLargeError, GuardianProducer


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
