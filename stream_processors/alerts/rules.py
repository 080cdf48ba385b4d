"""Alert rules are data: a YAML file, validated when a worker starts.

Schema (every field; see default-rules.yaml beside this module for the shipped rules):

    repeat_interval_s: 300     # a still-firing alert is notified again this often (Alertmanager's repeat_interval)
    group_by: [symbol]         # notifications of one batch are grouped by these labels
    receivers:                 # webhook receivers per severity; each gets Alertmanager's webhook JSON
      P0: [{url: "http://...", max_attempts: 8}]
      P1: []
    rules:                     # names are unique; `kind` decides which other fields exist
      - {name: ..., kind: breaker_open,    severity: P0}
      - {name: ..., kind: latency_spikes,  severity: P0, min_spikes: 5, window_s: 10}
      - {name: ..., kind: drift_sustained, severity: P1, score_above: 3.0, for_s: 30}
      - {name: ..., kind: producer_silent, severity: P1, silent_for_s: 60, forget_after_s: 3600}
      - {name: ..., kind: host_restore_degraded, severity: P0}

A bad file is refused with the rule's name and the field (`RulesError`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, model_validator

from guardian.errors import ConfigError

Severity = Literal["P0", "P1"]


class RulesError(ConfigError):
    """The rules file cannot be used; the message names the file, the rule and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Rule(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    severity: Severity
    summary: str | None = Field(None, description="One line for a person; {symbol}, {metric}, ... are filled in.")


class BreakerOpenRule(_Rule):
    """Fires when a symbol's circuit breaker goes OPEN; resolves when it goes CLOSED."""

    kind: Literal["breaker_open"]


class HostRestoreDegradedRule(_Rule):
    """Fires when a trading host starts without its guardrail state (its restore() found no source in
    time); resolves when a later restore of the same producer comes back complete."""

    kind: Literal["host_restore_degraded"]


class LatencySpikesRule(_Rule):
    """Fires when a symbol has >= min_spikes latency spikes over their threshold within window_s."""

    kind: Literal["latency_spikes"]
    min_spikes: int = Field(ge=1)
    window_s: float = Field(gt=0)


class DriftSustainedRule(_Rule):
    """Fires when a symbol's drift score for a metric stays above score_above for >= for_s."""

    kind: Literal["drift_sustained"]
    score_above: float
    for_s: float = Field(ge=0)


class ProducerSilentRule(_Rule):
    """Fires when a producer has sent nothing for silent_for_s; resolves at its next event."""

    kind: Literal["producer_silent"]
    silent_for_s: float = Field(gt=0)
    # A producer retired for good (a host decommissioned, a program renamed) stops being silent after
    # this long: it is forgotten (its alert resolves) instead of alerting forever.
    forget_after_s: float = Field(3600.0, gt=0)


Rule = Annotated[
    BreakerOpenRule | LatencySpikesRule | DriftSustainedRule | ProducerSilentRule | HostRestoreDegradedRule,
    Field(discriminator="kind"),
]


class Webhook(_Strict):
    url: HttpUrl
    max_attempts: int = Field(8, ge=1, le=100)
    timeout_s: float = Field(5.0, gt=0)


class RuleSet(_Strict):
    repeat_interval_s: float = Field(300.0, gt=0)
    group_by: tuple[str, ...] = ("symbol",)
    receivers: dict[Severity, tuple[Webhook, ...]] = Field(default_factory=dict)
    rules: tuple[Rule, ...]

    @model_validator(mode="after")
    def _unique_names(self) -> RuleSet:
        if not self.rules:
            raise ValueError("no rules: list at least one under `rules`")
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        return self

    def of_kind(self, kind: str) -> list[Any]:
        return [rule for rule in self.rules if rule.kind == kind]


def parse_rules(data: Any, source: str = "<rules>") -> RuleSet:
    try:
        return RuleSet.model_validate(data)
    except ValidationError as error:
        raise RulesError(_describe(error, data, source)) from None


DEFAULT_RULES = "default-rules.yaml"  # shipped beside this module


def load_rules(path: Path | None = None) -> RuleSet:
    """The rules in `path`; None = the default rules shipped with the package."""
    if path is None:
        source = resources.files(__package__) / DEFAULT_RULES
        return parse_rules(yaml.safe_load(source.read_text()), f"default rules ({DEFAULT_RULES})")
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RulesError(f"alert rules file {path}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RulesError(f"alert rules file {path}: not valid YAML: {exc}") from None
    return parse_rules(data, str(path))


def _describe(error: ValidationError, data: Any, source: str) -> str:
    lines = []
    for problem in error.errors():
        loc = list(problem["loc"])
        where = "top level"
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            index = loc[1]
            raw = data["rules"][index] if isinstance(data, dict) and index < len(data.get("rules") or []) else {}
            name = raw.get("name", "?") if isinstance(raw, dict) else "?"
            kinds = ("breaker_open", "latency_spikes", "drift_sustained", "producer_silent", "host_restore_degraded")
            field = [str(part) for part in loc[2:] if part not in kinds]
            where = f"rule {name!r} (rules[{index}])" + (f", field {'.'.join(field)!r}" if field else "")
        elif loc:
            where = f"field {'.'.join(str(part) for part in loc)!r}"
        lines.append(f"  {where}: {problem['msg']}")
    return f"alert rules file {source} is invalid:\n" + "\n".join(lines)
