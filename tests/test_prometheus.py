"""deploy/prometheus and deploy/grafana: the scrape config, the SLO rules and their unit tests, checked by
promtool (Debian's `prometheus` package, installed by `make setup`); the dashboard's queries parse; every
metric the rules and the dashboard use is exported by the code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from prometheus_client import REGISTRY

from guardian.settings import REPO_ROOT

PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "guardian.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: run `make setup` (Debian's prometheus package)")
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=PROMETHEUS, timeout=120)


@pytest.mark.parametrize(
    "args",
    [("check", "config", "prometheus.yml"), ("check", "rules", "rules.yml"), ("test", "rules", "rules-test.yml")],
    ids=["config", "rules", "rule-tests"],
)
def test_promtool_accepts(args):
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def exported_names() -> set[str]:
    import guardian.stream_processors.metrics  # noqa: F401  (registers the worker's metrics)
    from guardian.producers.metrics import COUNTERS, GAUGES

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = {family.name + end for family in REGISTRY.collect() for end in suffixes.get(family.type, ("",))}
    names |= {f"guardian_producer_{name}" for name in (*COUNTERS, *GAUGES)}
    names |= {f"guardian_producer_{name}_total" for name in COUNTERS}
    source = (REPO_ROOT / "api" / "app.py").read_text()  # the API makes its metrics per app
    names |= {f"{m}{suffix}" for m in re.findall(r'"(guardian_api_[a-z_]+)"', source) for suffix in ("", "_total")}
    return names


def dashboard_queries() -> list[str]:
    return [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]


def test_the_dashboard_queries_parse(tmp_path):
    """As recording rules, so promtool parses each query."""
    rules = [{"record": f"guardian:dashboard_panel_{i}", "expr": expr} for i, expr in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_used_is_exported(source):
    text = (PROMETHEUS / "rules.yml").read_text() if source == "rules" else " ".join(dashboard_queries())
    used = set(re.findall(r"\b(guardian_[a-z_]+)", text))
    assert used, f"no guardian metric in the {source}"
    missing = sorted(name for name in used if name not in exported_names())
    assert missing == [], f"the {source} use metrics the code does not export: {missing}"
