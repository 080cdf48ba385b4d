"""The settings object and how the CLI reports bad configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from guardian.errors import ConfigError
from guardian.settings import Settings, describe_config_error, masked, require_secret
from guardian.settings_cli import configuration_page

GUARDIAN = str(Path(sys.executable).with_name("guardian"))


def test_client_addresses_follow_local_ports(monkeypatch):
    monkeypatch.setenv("GUARDIAN_KAFKA_PORT", "29092")
    monkeypatch.setenv("GUARDIAN_REDIS_PORT", "26379")
    monkeypatch.setenv("GUARDIAN_POSTGRES_PORT", "25432")
    settings = Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:29092"
    assert settings.redis_url == "redis://127.0.0.1:26379/0"
    assert settings.postgres_dsn.endswith("@127.0.0.1:25432/guardian")


def test_the_application_and_the_owner_have_their_own_roles_locally(monkeypatch):
    monkeypatch.setenv("GUARDIAN_POSTGRES_PORT", "25432")
    monkeypatch.delenv("GUARDIAN_POSTGRES_DSN", raising=False)
    monkeypatch.delenv("GUARDIAN_POSTGRES_ADMIN_DSN", raising=False)
    settings = Settings()
    assert settings.postgres_dsn == "postgresql://guardian_app@127.0.0.1:25432/guardian"
    assert settings.postgres_admin_dsn == "postgresql://guardian@127.0.0.1:25432/guardian"


def test_one_dsn_given_is_both_roles_unless_the_owners_is_given_too(monkeypatch):
    monkeypatch.setenv("GUARDIAN_POSTGRES_DSN", "postgresql://app:pw@db:5432/g")
    monkeypatch.delenv("GUARDIAN_POSTGRES_ADMIN_DSN", raising=False)
    assert Settings().postgres_admin_dsn == "postgresql://app:pw@db:5432/g"
    monkeypatch.setenv("GUARDIAN_POSTGRES_ADMIN_DSN", "postgresql://owner:pw@db:5432/g")
    settings = Settings()
    assert (settings.postgres_dsn, settings.postgres_admin_dsn) == (
        "postgresql://app:pw@db:5432/g",
        "postgresql://owner:pw@db:5432/g",
    )


def test_an_explicit_address_wins_over_the_port(monkeypatch):
    monkeypatch.setenv("GUARDIAN_KAFKA_PORT", "29092")
    monkeypatch.setenv("GUARDIAN_KAFKA_BOOTSTRAP", "broker-1:9092,broker-2:9092")
    assert Settings().kafka_bootstrap == "broker-1:9092,broker-2:9092"


def test_bad_value_is_reported_by_variable_name():
    result = subprocess.run(
        [GUARDIAN, "stack", "status"],
        capture_output=True,
        text=True,
        env={"GUARDIAN_EVENTS_RETENTION_HOURS": "2", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "GUARDIAN_EVENTS_RETENTION_HOURS='2'" in result.stderr
    assert "greater than or equal to 24" in result.stderr
    assert "Traceback" not in result.stderr


def test_secrets_have_no_usable_default():
    assert Settings().api_token is None
    with pytest.raises(ConfigError, match="GUARDIAN_API_TOKEN is not set"):
        require_secret(Settings().api_token, "GUARDIAN_API_TOKEN")


def test_the_configuration_page_is_generated_from_the_settings():
    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert page == configuration_page(), "run: guardian settings docs --output docs/configuration.md"
    assert all(f"`GUARDIAN_{name.upper()}`" in page for name in Settings.model_fields)


def test_a_configuration_error_never_prints_a_secret():
    env = {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_password": "s3cret", "api_token": "t0ken"}
    with pytest.raises(ValidationError) as caught:
        Settings(**env)
    text = describe_config_error(caught.value)
    assert "GUARDIAN_KAFKA_SASL_USERNAME" in text
    assert "s3cret" not in text and "t0ken" not in text
    with pytest.raises(ValidationError) as caught:
        Settings(postgres_dsn=None, kafka_sasl_password="s3cret")
    assert "s3cret" not in describe_config_error(caught.value)


def test_settings_show_masks_secrets():
    assert masked("api_token", "abc") == "****"
    assert masked("postgres_dsn", "postgresql://guardian:s3cret@db:5432/guardian") == (
        "postgresql://guardian:****@db:5432/guardian"
    )
    assert masked("postgres_dsn", "postgresql://guardian@127.0.0.1:15432/guardian").endswith("15432/guardian")
