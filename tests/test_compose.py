"""deploy/docker-compose.yml, validated by a real compose implementation (Debian's docker-compose needs no daemon)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from guardian.settings import REPO_ROOT, Settings

COMPOSE_FILE = REPO_ROOT / "deploy" / "docker-compose.yml"
SECRETS = {
    "GUARDIAN_POSTGRES_PASSWORD": "compose-test",
    "GUARDIAN_POSTGRES_APP_PASSWORD": "compose-test-app",
    "GUARDIAN_API_TOKEN": "compose-test",
}


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed: run `make setup` (apt-get install --no-install-recommends docker-compose)"
        )
    clean_env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True, env={**clean_env, **env}
    )


@pytest.fixture(scope="module")
def resolved() -> dict:
    result = compose_config(SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid(resolved):
    assert {"kafka", "redis", "timescaledb", "init", "worker", "api"} <= set(resolved["services"])


def test_every_image_from_a_registry_is_pinned_to_a_version(resolved):
    for name, service in resolved["services"].items():
        image = service["image"]
        if image.startswith("guardian-ingestion:"):
            continue  # built from this checkout
        tag = image.rpartition(":")[2]
        assert ":" in image and "latest" not in tag and any(c.isdigit() for c in tag), f"{name}: {image}"


def test_worker_can_scale(resolved):
    worker = resolved["services"]["worker"]
    # A fixed name or a published host port would make `--scale worker=3` fail.
    assert "container_name" not in worker
    assert not worker.get("ports")


def test_same_variables_and_topics_as_the_local_stack(resolved):
    known = {f"GUARDIAN_{name.upper()}" for name in Settings.model_fields}
    defaults = Settings()
    for name in ("init", "worker", "api"):
        env = resolved["services"][name]["environment"]
        assert set(env) <= known, f"{name} sets variables Settings does not read: {set(env) - known}"
        assert env["GUARDIAN_EVENTS_TOPIC"] == defaults.events_topic
        assert env["GUARDIAN_ALERTS_TOPIC"] == defaults.alerts_topic
        assert env["GUARDIAN_DLQ_TOPIC"] == defaults.dlq_topic


def test_secrets_have_no_default():
    result = compose_config({})
    assert result.returncode != 0
    assert "GUARDIAN_POSTGRES_PASSWORD" in result.stderr


def test_only_init_and_the_worker_get_the_owner_role(resolved):
    services = resolved["services"]
    for name in ("init", "worker", "api"):
        assert services[name]["environment"]["GUARDIAN_POSTGRES_DSN"].startswith("postgresql://guardian_app:")
    for name in ("init", "worker"):  # migrations and storage upkeep
        assert services[name]["environment"]["GUARDIAN_POSTGRES_ADMIN_DSN"].startswith("postgresql://guardian:")
    assert "GUARDIAN_POSTGRES_ADMIN_DSN" not in services["api"]["environment"]
