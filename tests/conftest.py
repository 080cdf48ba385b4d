"""Fixtures shared by every test.

Integration tests talk to real services. The backend is chosen by
GUARDIAN_TEST_BACKEND:
  local (default)   the real-process stack started by `guardian stack up` (make test does it)
  testcontainers    the same services in Docker containers (needs a Docker engine)
A service that is not reachable is an error with the command that fixes it, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from guardian.settings import Settings

BACKEND = os.environ.get("GUARDIAN_TEST_BACKEND", "local")

# the `browser`, `artifacts` and `screenshot` fixtures: Debian's headless Chromium through selenium
pytest_plugins = ["tests.integration.browser"]


def pytest_report_header(config: pytest.Config) -> str:
    return f"guardian test backend: {BACKEND} (set GUARDIAN_TEST_BACKEND=local|testcontainers)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything under tests/integration needs the services.
    for item in items:
        if "integration" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """Settings pointing at live services, verified reachable before any test uses them."""
    if BACKEND == "testcontainers":
        from tests.backends.testcontainers_backend import start_containers

        with start_containers() as container_settings:
            yield container_settings
        return
    if BACKEND != "local":
        pytest.fail(f"GUARDIAN_TEST_BACKEND={BACKEND!r} is not one of: local, testcontainers")
    from guardian.stack.health import probe_all

    configured = Settings()
    problems = [f"{p.name} at {p.address}: {p.detail}" for p in probe_all(configured) if not p.healthy]
    if problems:
        pytest.fail(
            "the local stack is not healthy, so integration tests cannot run:\n  "
            + "\n  ".join(problems)
            + "\nStart it with `guardian stack up` (or run `make test`, which does).",
            pytrace=False,
        )
    yield configured


@pytest.fixture
def new_topic(settings: Settings) -> Callable[..., str]:
    """Create a fresh topic for one test so tests never read each other's records."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    created: list[str] = []

    def make(
        prefix: str = "test", partitions: int = 12, *, create: bool = True, config: dict[str, str] | None = None
    ) -> str:
        """create=False only names it (and deletes it afterwards): the test creates it later."""
        name = f"{prefix}.{uuid.uuid4().hex[:10]}"
        if create:
            topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
            futures = admin.create_topics([topic])
            futures[name].result(timeout=30)
        created.append(name)
        return name

    yield make
    if created:
        for future in admin.delete_topics(created).values():
            with contextlib.suppress(Exception):  # cleanup only; the topic may already be gone
                future.result(timeout=30)


@pytest.fixture(autouse=True)
def delete_worker_state_topics(request: pytest.FixtureRequest) -> Iterator[None]:
    """Test workers each have their own group, so Faust creates `<group>-state-*` topics (the alert
    table's changelog) per test; delete them afterwards so the broker does not pile up partitions."""
    yield
    if "settings" not in request.fixturenames:
        return
    from confluent_kafka.admin import AdminClient

    from tests.integration.helpers import WORKER_GROUP_PREFIXES

    settings = request.getfixturevalue("settings")
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(WORKER_GROUP_PREFIXES) and "-state-" in t]
    if topics:
        for future in admin.delete_topics(topics).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)
