"""The one place Kafka client configuration is made from the settings.

Every Kafka client the product creates — librdkafka's producers, consumers and admin clients,
and Faust's (aiokafka) — gets the bootstrap servers and the security settings
(GUARDIAN_KAFKA_SECURITY_PROTOCOL, SASL mechanism/user/password, CA file) from here, so a
cluster that needs TLS or SASL needs them set once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from guardian.errors import GuardianError

if TYPE_CHECKING:
    from guardian.settings import Settings


def client_config(settings: Settings, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka configuration: bootstrap, security, then `extra` (the client's own properties)."""
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap}
    protocol = settings.kafka_security_protocol
    if protocol != "PLAINTEXT":
        config["security.protocol"] = protocol.lower()
    if protocol.startswith("SASL_"):
        config.update(
            {
                "sasl.mechanism": settings.kafka_sasl_mechanism,
                "sasl.username": settings.kafka_sasl_username,
                "sasl.password": settings.kafka_sasl_password,
            }
        )
    if protocol.endswith("SSL") and settings.kafka_ssl_ca_location:
        config["ssl.ca.location"] = str(settings.kafka_ssl_ca_location)
    return {**config, **(extra or {})}


def faust_broker(settings: Settings) -> dict[str, Any]:
    """The `broker` and `broker_credentials` arguments of a faust.App."""
    import ssl

    import faust

    protocol = settings.kafka_security_protocol
    servers = ";".join(f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(","))
    context = None
    if protocol.endswith("SSL"):
        cafile = str(settings.kafka_ssl_ca_location) if settings.kafka_ssl_ca_location else None
        context = ssl.create_default_context(cafile=cafile)
    if protocol.startswith("SASL_"):
        credentials: Any = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    elif protocol == "SSL":
        credentials = faust.SSLCredentials(context)
    else:
        credentials = None
    return {"broker": servers, "broker_credentials": credentials}


class KafkaUnavailableError(GuardianError, ConnectionError):
    """Kafka refused or did not answer a command's client; the message carries librdkafka's reason."""


class ErrorTrap:
    """`error_cb` for a short-lived client. When a call fails, librdkafka says only "Broker transport
    failure"; the reason (a refused SASL login, a name that does not resolve) reaches `error_cb` alone.
    Authentication errors win over others."""

    def __init__(self) -> None:
        self.error: Any = None

    def __call__(self, error: Any) -> None:
        from confluent_kafka import KafkaError

        if self.error is None or error.code() == KafkaError._AUTHENTICATION:
            self.error = error

    def reason(self, client: Any, failure: object) -> str:
        """The best reason for `failure` of `client` (an AdminClient, Consumer or Producer)."""
        client.poll(0)  # serves the error callbacks waiting
        return self.error.str() if self.error is not None else str(failure)
