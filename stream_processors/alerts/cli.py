"""`guardian alerts`: check a rules file, list active alerts, manage silences."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import click
import redis

from guardian.cli_kit import parse_duration
from guardian.settings import get_settings
from guardian.sinks.audit import audited
from guardian.stream_processors.alerts.outputs import ACTIVE_SET, ALERT_KEY, SILENCES
from guardian.stream_processors.alerts.rules import RulesError, load_rules


@click.group()
def alerts() -> None:
    """Alert rules, active alerts and silences."""


@alerts.command("check-rules")
@click.argument("path", type=click.Path(path_type=Path), required=False)
def check_rules(path: Path | None) -> None:
    """Validate a rules file (default: GUARDIAN_ALERT_RULES_FILE) as a worker would at start."""
    path = path or get_settings().alert_rules_file
    try:
        rules = load_rules(path)
    except RulesError as error:
        raise click.ClickException(str(error)) from None
    for rule in rules.rules:
        click.echo(f"  {rule.severity}  {rule.name:<28} {rule.kind}")
    click.echo(f"{path or 'default rules'}: {len(rules.rules)} rule(s) valid")


def _client() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, decode_responses=True)


@alerts.command("list")
def list_alerts() -> None:
    """Alerts firing now, across the fleet."""
    client = _client()
    fingerprints = sorted(client.smembers(ACTIVE_SET))
    for body in client.mget([ALERT_KEY.format(fp) for fp in fingerprints]) if fingerprints else []:
        if body:
            alert = json.loads(body)
            muted = " (silenced)" if alert.get("silenced") else ""
            click.echo(f"{alert['severity']}  {alert['rule']:<24} {alert['fingerprint']}  {alert['summary']}{muted}")
    click.echo(f"{len(fingerprints)} alert(s) firing")


def _matchers(pairs: tuple[str, ...]) -> dict[str, str]:
    matchers = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise click.BadParameter(f"{pair!r}: expected name=value (name: rule, severity or a label)")
        matchers[name] = value
    return matchers


@alerts.command()
@click.argument("matchers", nargs=-1, required=True)
@click.option("--for", "duration", default="1h", show_default=True, help="How long: 30m, 2h, 1d ...")
@click.option("--comment", default="", help="Why (shown by `guardian alerts silences`).")
def silence(matchers: tuple[str, ...], duration: str, comment: str) -> None:
    """Mute notifications of alerts matching every NAME=VALUE (e.g. rule=drift-sustained symbol=AAPL). Audited."""
    seconds = parse_duration(duration)
    matched = _matchers(matchers)
    silence_id = uuid.uuid4().hex[:12]
    params = {"matchers": matched, "for": duration, "comment": comment}
    with audited(get_settings().postgres_dsn, "alerts silence", target=silence_id, params=params) as entry:
        expires_at = time.time() + seconds
        body = {"matchers": matched, "expires_at_us": int(expires_at * 1e6), "comment": comment}
        _client().hset(SILENCES, silence_id, json.dumps(body))
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires_at))
        entry.outcome["until"] = until
    click.echo(f"silence {silence_id} until {until}")


@alerts.command()
def silences() -> None:
    """Silences, with what they match and when they expire (expired ones are removed)."""
    client = _client()
    now_us = time.time() * 1e6
    for silence_id, raw in sorted(client.hgetall(SILENCES).items()):
        body = json.loads(raw)
        if body["expires_at_us"] <= now_us:
            client.hdel(SILENCES, silence_id)
            continue
        left = (body["expires_at_us"] - now_us) / 1e6
        matchers = " ".join(f"{k}={v}" for k, v in body["matchers"].items())
        click.echo(f"{silence_id}  {matchers}  expires in {left / 60:.0f} min  {body.get('comment', '')}")


@alerts.command()
@click.argument("silence_id")
def unsilence(silence_id: str) -> None:
    """Remove a silence before it expires. Audited (a silence that is not there: as failed)."""
    with audited(get_settings().postgres_dsn, "alerts unsilence", target=silence_id) as entry:
        removed, deleted = _client().pipeline().hget(SILENCES, silence_id).hdel(SILENCES, silence_id).execute()
        if not deleted:
            raise click.ClickException(f"no silence {silence_id!r} (see `guardian alerts silences`)")
        entry.outcome["removed"] = json.loads(removed) if removed else None
    click.echo(f"silence {silence_id} removed")
