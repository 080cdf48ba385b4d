"""What the short-lived Kafka clients say when Kafka refuses or does not answer (no broker needed)."""

from __future__ import annotations

from confluent_kafka import KafkaError

from guardian.kafka_config import ErrorTrap
from guardian.stream_processors import batch_source
from guardian.stream_processors.batch_source import BatchSource


class Client:
    def poll(self, timeout: float) -> None:
        pass


def test_an_authentication_error_is_the_reason_given_over_a_transport_failure():
    trap = ErrorTrap()
    trap(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))
    trap(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: Invalid username or password"))
    trap(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert trap.reason(Client(), "Failed to get metadata") == "SASL authentication error: Invalid username or password"
    assert ErrorTrap().reason(Client(), "Failed to get metadata") == "Failed to get metadata"


def test_the_topic_id_is_empty_when_kafka_does_not_answer(monkeypatch):
    """It used to raise TimeoutError, which stopped the worker on a partition move."""
    monkeypatch.setattr(batch_source, "TOPIC_ID_TIMEOUT_S", 0.5)
    source = BatchSource({"bootstrap.servers": "127.0.0.1:1", "log_level": 0}, "group", "events")
    assert source.topic_id() == ""
