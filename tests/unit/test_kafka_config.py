"""Every Kafka client gets its connection and security from one place."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from guardian.kafka_config import client_config, faust_broker
from guardian.settings import Settings


def test_plaintext_is_just_the_bootstrap_servers_plus_the_clients_own():
    config = client_config(Settings(kafka_bootstrap="k1:9092,k2:9092"), {"group.id": "g"})
    assert config == {"bootstrap.servers": "k1:9092,k2:9092", "group.id": "g"}


def test_sasl_ssl_reaches_librdkafka_and_faust(tmp_path):
    ca = tmp_path / "ca.pem"
    settings = Settings(
        kafka_bootstrap="k1:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="guardian",
        kafka_sasl_password="s3cret",
        kafka_ssl_ca_location=ca,
    )
    assert client_config(settings) == {
        "bootstrap.servers": "k1:9093",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "guardian",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(ca),
    }
    ca.write_text("")  # an empty CA file: ssl refuses it, proving the file is what Faust's context loads
    with pytest.raises(Exception, match=r"(?i)no certificate|ssl|pem"):
        faust_broker(settings)


def test_faust_gets_sasl_credentials_and_every_broker():
    settings = Settings(
        kafka_bootstrap="k1:9092,k2:9092",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
    )
    broker = faust_broker(settings)
    assert broker["broker"] == "kafka://k1:9092;kafka://k2:9092"
    credentials = broker["broker_credentials"]
    assert (credentials.username, credentials.password, credentials.mechanism.value) == ("u", "p", "PLAIN")
    assert faust_broker(Settings())["broker_credentials"] is None


def test_sasl_without_credentials_is_a_configuration_error():
    with pytest.raises(ValidationError, match="GUARDIAN_KAFKA_SASL_USERNAME"):
        Settings(kafka_security_protocol="SASL_SSL")
