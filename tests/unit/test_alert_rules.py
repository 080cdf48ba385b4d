"""The rules file: the shipped one is valid; a bad one is refused naming the rule and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardian.stream_processors.alerts.rules import RulesError, load_rules, parse_rules


def test_the_shipped_rules_file_covers_every_condition():
    rules = load_rules()  # the default rules, shipped as package data
    kinds = {rule.kind for rule in rules.rules}
    assert kinds == {"breaker_open", "latency_spikes", "drift_sustained", "producer_silent", "host_restore_degraded"}
    assert {rule.severity for rule in rules.of_kind("breaker_open")} == {"P0"}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"name": "burst", "kind": "latency_spikes", "severity": "P0", "min_spikes": 0, "window_s": 5},
         "rule 'burst' (rules[0]), field 'min_spikes'"),
        ({"name": "burst", "kind": "latency_spikes", "severity": "P0", "min_spikes": 3},
         "rule 'burst' (rules[0]), field 'window_s': Field required"),
        ({"name": "odd", "kind": "flux_capacitor", "severity": "P0"},
         "rule 'odd' (rules[0]): Input tag 'flux_capacitor'"),
        ({"name": "sev", "kind": "breaker_open", "severity": "P3"}, "rule 'sev' (rules[0]), field 'severity'"),
        ({"name": "typo", "kind": "producer_silent", "severity": "P1", "silent_for": 5},
         "rule 'typo' (rules[0]), field 'silent_for'"),
    ],
)  # fmt: skip
def test_a_bad_rule_is_refused_naming_rule_and_field(rule, expected):
    with pytest.raises(RulesError) as error:
        parse_rules({"rules": [rule]}, "rules.yaml")
    assert expected in str(error.value)
    assert str(error.value).startswith("alert rules file rules.yaml is invalid")


def test_duplicate_names_an_empty_list_and_bad_receivers_are_refused():
    rule = {"name": "a", "kind": "breaker_open", "severity": "P0"}
    with pytest.raises(RulesError, match="rule name 'a' is used twice"):
        parse_rules({"rules": [rule, rule]})
    with pytest.raises(RulesError, match="no rules"):
        parse_rules({"rules": []})
    with pytest.raises(RulesError, match=r"receivers\.P0\.0\.url"):
        parse_rules({"receivers": {"P0": [{"url": "not a url"}]}, "rules": [rule]})


def test_unreadable_and_non_yaml_files_say_so(tmp_path: Path):
    with pytest.raises(RulesError, match="cannot read it"):
        load_rules(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [unclosed\n")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(broken)
