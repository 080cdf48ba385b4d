"""A real Prometheus (Debian's server, installed with promtool) scraping a real worker with the platform's
rules: every rule evaluates, and no metric label collides with the labels Prometheus adds itself
(a label named `job` became `exported_job`, and the rules grouped by the wrong one)."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest

from guardian.settings import REPO_ROOT
from guardian.stack.process import free_port
from tests.integration.helpers import WorkerProcess, wait_for


def query(port: int, path: str, **params: str) -> dict | None:
    url = f"http://127.0.0.1:{port}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())["data"]
    except OSError:
        return None


def test_prometheus_scrapes_a_worker_and_every_rule_evaluates(new_topic, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Debian's prometheus is not installed: run `make setup`")
    worker = WorkerProcess(new_topic(), tmp_path).start()
    port = free_port()
    shutil.copy(REPO_ROOT / "deploy" / "prometheus" / "rules.yml", tmp_path / "rules.yml")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [rules.yml]\n"
        "scrape_configs:\n"
        f"  - job_name: guardian-worker\n    static_configs: [{{targets: ['127.0.0.1:{worker.port}']}}]\n"
    )
    server = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        up = wait_for(lambda: (d := query(port, "/api/v1/query", query="up")) and d["result"], 90, "a scrape")
        wait_for(
            lambda: (d := query(port, "/api/v1/query", query="up")) and d["result"][0]["value"][1] == "1",
            90,
            f"the worker scraped as up (last: {up})",
        )
        series = wait_for(
            lambda: (d := query(port, "/api/v1/query", query='{__name__=~"guardian_.+"}')) and d["result"],
            60,
            "guardian metrics in Prometheus",
        )
        collided = sorted({label for s in series for label in s["metric"] if label.startswith("exported_")})
        assert collided == [], f"metric labels that collide with Prometheus' own: {collided}"

        def evaluated_rules() -> list | None:
            data = query(port, "/api/v1/rules")
            rules = [rule for group in data["groups"] for rule in group["rules"]] if data else []
            return rules if rules and all(rule.get("health") == "ok" for rule in rules) else None

        rules = wait_for(evaluated_rules, 60, "every rule evaluated")
        assert len(rules) >= 8
    finally:
        server.terminate()
        server.wait(timeout=30)
        worker.stop()
