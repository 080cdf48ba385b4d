"""Bring the whole local stack up, down, and report on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import asyncpg

from guardian.settings import Settings
from guardian.stack.errors import StackError
from guardian.stack.kafka_service import KafkaService
from guardian.stack.layout import StackLayout
from guardian.stack.postgres_service import PostgresService
from guardian.stack.process import ManagedProcess
from guardian.stack.redis_service import RedisService


class Service(Protocol):
    name: str
    process: ManagedProcess

    @property
    def address(self) -> str: ...
    def preflight(self) -> None: ...
    def start(self) -> str: ...
    def stop(self) -> bool: ...


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        layout = StackLayout.from_settings(settings)
        self.kafka = KafkaService(settings, layout)
        self.redis = RedisService(settings, layout)
        self.postgres = PostgresService(settings, layout)
        # Start order: the cheap ones first so a port clash is reported before the Kafka download.
        self.services: dict[str, Service] = {"redis": self.redis, "postgres": self.postgres, "kafka": self.kafka}

    def up(self, report: Callable[[str], None] = print, only: str | None = None) -> None:
        chosen = {name: service for name, service in self.services.items() if only in (None, name)}
        # Every prerequisite is checked before anything starts, so a failure leaves nothing half-up.
        for service in chosen.values():
            service.preflight()
        for name, service in chosen.items():
            began = time.monotonic()
            outcome = service.start()
            report(f"{name:<9} {service.address:<16} {outcome} ({time.monotonic() - began:.1f} s)")
            if name == "postgres":
                self._migrate(report)
            if name == "kafka":
                for action in self.kafka.ensure_topics():
                    report(f"{'':<9} {'':<16} {action}")

    def init(self, report: Callable[[str], None] = print) -> None:
        """Schema, storage policy and topics on already-running services (Docker, a managed cluster):
        starts nothing. Each part is done as far as its service allows; what failed is raised at the end."""
        from guardian.kafka_config import KafkaUnavailableError

        self._migrate(report)
        try:
            actions = self.kafka.ensure_topics()
        except KafkaUnavailableError as exc:
            raise StackError(
                f"the database is ready, but {exc}; fix that (Kafka running? GUARDIAN_KAFKA_BOOTSTRAP and its"
                " security settings?) and run `guardian stack init` again"
            ) from exc
        for action in actions:
            report(action)

    def _migrate(self, report: Callable[[str], None]) -> None:
        """Migrations, the application's role, then the storage policy reconciled with the settings and
        maintenance run: all as the owner (GUARDIAN_POSTGRES_ADMIN_DSN)."""
        from guardian.sinks.migrations import apply_migrations
        from guardian.sinks.roles import ensure_app_role
        from guardian.sinks.storage import StorageJobError, StoragePolicy, upkeep

        dsn = self.settings.postgres_admin_dsn
        try:
            applied = asyncio.run(apply_migrations(dsn))
            roles = asyncio.run(ensure_app_role(dsn, self.settings.postgres_dsn))
            changes = asyncio.run(upkeep(dsn, StoragePolicy.from_settings(self.settings)))
        except (OSError, asyncpg.PostgresError, StorageJobError) as exc:
            address = dsn.rsplit("@", 1)[-1]  # never print a password
            raise StackError(f"PostgreSQL at {address} refused the schema: {exc}") from exc
        if applied:
            report(f"{'':<9} {'':<16} applied migrations {', '.join(applied)}")
        for line in roles:
            report(f"{'':<9} {'':<16} roles: {line}")
        for line in changes:
            report(f"{'':<9} {'':<16} storage: {line}")

    def down(self, report: Callable[[str], None] = print, only: str | None = None) -> None:
        for name in self.stop_order(only):
            self.stop_one(name, report)

    @staticmethod
    def stop_order(only: str | None = None) -> list[str]:
        """Kafka first: it may still be flushing to disk while clients disconnect. PostgreSQL last: the
        audit row of a `down` is written before it stops."""
        return [name for name in ("kafka", "redis", "postgres") if only in (None, name)]

    def stop_one(self, name: str, report: Callable[[str], None] = print) -> bool:
        stopped = self.services[name].stop()
        report(f"{name:<9} {'stopped' if stopped else 'was not running'}")
        return stopped

    def pids(self) -> dict[str, int | None]:
        return {name: service.process.pid() for name, service in self.services.items()}  # type: ignore[attr-defined]
