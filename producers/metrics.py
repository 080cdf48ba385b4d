"""Prometheus view of a GuardianProducer's stats(), read at scrape time.

A collector rather than Counter objects: emit() then only bumps plain ints, and
the numbers Prometheus sees are exactly the ones `stats()` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

COUNTERS = {
    "emitted": "Events accepted by emit()",
    "delivered": "Events Kafka acknowledged",
    "failed": "Deliveries Kafka refused or timed out (re-spooled; set aside if too large)",
    "spooled": "Events written to the disk spool",
    "dropped": "Events dropped: the spool was full (drop_newest policy) or the disk refused the write",
    "rejected": "Events Kafka refused for good (too large for the broker), kept in <spool>/rejected/",
    "torn_records": "Torn spool records found after a crash and cut off",
}
GAUGES = {
    "spool_bytes": "Bytes in the disk spool",
    "spool_records": "Events in the disk spool not yet acknowledged",
    "queue_depth": "Events in librdkafka's queue, not yet acknowledged",
    "spooling": "1 while new events go to the spool instead of Kafka",
    "drain_blocked": "1 while Kafka refuses the spooled events (e.g. the topic does not exist); they stay on disk",
}


class ProducerCollector(Collector):
    def __init__(self, stats: Callable[[], dict], producer_id: str) -> None:
        self._stats = stats
        self._producer_id = producer_id

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._stats()
        for name, doc in COUNTERS.items():
            family = CounterMetricFamily(f"guardian_producer_{name}", doc, labels=["producer_id"])
            family.add_metric([self._producer_id], stats[name])
            yield family
        for name, doc in GAUGES.items():
            family = GaugeMetricFamily(f"guardian_producer_{name}", doc, labels=["producer_id"])
            family.add_metric([self._producer_id], float(stats[name]))
            yield family
