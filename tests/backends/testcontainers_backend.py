"""GUARDIAN_TEST_BACKEND=testcontainers: the same three services in Docker containers.

For developers with a Docker engine. It cannot run on hosts without one (CI here
has none); then it fails with that reason instead of silently using something else.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from guardian.settings import REPO_ROOT, Settings


def _compose_image(service: str) -> str:
    """The image deploy/docker-compose.yml pins for a service: one pin for both."""
    import yaml

    return yaml.safe_load((REPO_ROOT / "deploy" / "docker-compose.yml").read_text())["services"][service]["image"]


@contextlib.contextmanager
def start_containers() -> Iterator[Settings]:
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        pytest.fail(
            f"GUARDIAN_TEST_BACKEND=testcontainers needs a running Docker engine ({exc}). "
            "Use the default local backend (`make test`) on hosts without Docker.",
            pytrace=False,
        )
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer
    from testcontainers.redis import RedisContainer

    from guardian.stack.manager import Stack

    with (
        KafkaContainer("confluentinc/cp-kafka:7.8.0").with_kraft() as kafka,
        RedisContainer(_compose_image("redis")) as redis,
        PostgresContainer(
            _compose_image("timescaledb"), username="guardian", password="guardian", dbname="guardian"
        ) as postgres,
    ):
        overrides = {
            "GUARDIAN_KAFKA_BOOTSTRAP": kafka.get_bootstrap_server(),
            "GUARDIAN_REDIS_URL": f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0",
            "GUARDIAN_POSTGRES_DSN": postgres.get_connection_url(driver=None),
        }
        os.environ.update(overrides)  # worker subprocesses started by tests inherit the same services
        settings = Settings()
        Stack(settings).init(report=lambda line: None)
        yield settings
