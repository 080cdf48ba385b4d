"""Query API and dashboard benchmark, on the local stack with 1,000,000 events of 20 symbols.

1. Loads N events (default 1M) through one worker into a database, Redis database and topics of the
   bench's own (created and dropped), so the hot view and the history are real.
2. Serves `guardian api` against them and sends a bounded number of requests per route over loopback,
   one at a time on a keep-alive connection: p50/p99/max of the hot view, timeline, as-of, events and
   status routes, each request audited as in production. The baseline in the same run is `/healthz`
   (one `SELECT 1`, no auth, no audit row): what the HTTP stack itself costs here.
3. Debian's headless Chromium logs in and loads the overview and a symbol page: first contentful
   paint, several loads each.
4. The live stream: 100 breaker transitions emitted one by one through a producer while the browser
   listens; the delay is the browser's receipt time minus the event's time (one host clock).
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import httpx
from confluent_kafka.admin import AdminClient

from bench.cli import RESULTS
from bench.machine import describe_machine
from bench.pipeline import GUARDIAN, _percentile
from bench.recovery import Fleet, _lag
from bench.stores import isolated
from guardian.kafka_config import client_config
from guardian.producers import GuardianProducer
from guardian.settings import Settings
from guardian.stack.process import free_port, wait_until

SYMBOLS = [f"SYM{i:02d}" for i in range(20)]
REQUESTS = 1000
WARMUP_REQUESTS = 50
PAINT_LOADS = 5
TRANSITIONS = 100


def _load(settings: Settings, events: int, spool: Path) -> None:
    """Latency, drift and breaker events spread over 20 symbols, in the simulator's proportions."""
    states = ["CLOSED", "OPEN", "HALF_OPEN"]
    with GuardianProducer(settings, producer_id=f"bench-api-{uuid.uuid4().hex[:6]}", spool_dir=spool) as producer:
        for n in range(events):
            symbol, turn = SYMBOLS[n % len(SYMBOLS)], n // len(SYMBOLS)
            if turn % 50 == 0:  # every symbol's breaker moves now and then, each on its own cycle
                cycle = turn // 50 + n % 7
                producer.circuit_breaker(symbol, states[cycle % 3], states[(cycle + 1) % 3], reason="bench",
                                         trip_count=cycle)  # fmt: skip
            elif turn % 3 == 0:
                producer.drift(symbol, metric=f"m{n % 4}", expected=1.0, observed=1.1, drift_score=(n % 97) / 10)
            else:
                latency = 100 + n % 900
                producer.latency_spike(symbol, observed_latency_us=latency, threshold_us=5000, p50_us=100,
                                       p99_us=latency + 200, p999_us=latency + 900)  # fmt: skip
        if producer.flush(600):
            raise click.ClickException("the bench's events were not all acknowledged by Kafka")


def _routes(now: datetime) -> dict[str, callable]:
    def symbol() -> str:
        return random.choice(SYMBOLS)

    def moment() -> str:
        return (now - timedelta(seconds=random.uniform(0, 300))).isoformat()

    return {
        "GET /healthz (baseline)": lambda: ("/healthz", {}),
        "GET /v1/hot/latest?symbol": lambda: ("/v1/hot/latest", {"symbol": symbol()}),
        "GET /v1/hot/breakers": lambda: ("/v1/hot/breakers", {}),
        "GET /v1/hot/recent/{symbol}": lambda: (f"/v1/hot/recent/{symbol()}", {"limit": 100}),
        "GET /v1/symbols/{symbol}/timeline": lambda: (f"/v1/symbols/{symbol()}/timeline", {"limit": 100}),
        "GET /v1/symbols/{symbol}/as-of": lambda: (f"/v1/symbols/{symbol()}/as-of", {"at": moment()}),
        "GET /v1/events?symbol": lambda: ("/v1/events", {"symbol": symbol(), "limit": 100}),
        "GET /v1/status": lambda: ("/v1/status", {}),
    }


def _latencies(url: str, token: str, requests: int) -> dict:
    out = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for name, request in _routes(datetime.now(UTC)).items():
            timings = []
            for i in range(WARMUP_REQUESTS + requests):
                path, params = request()
                began = time.perf_counter()
                response = client.get(path, params=params)
                elapsed = time.perf_counter() - began
                if response.status_code != 200:
                    raise click.ClickException(f"{name}: HTTP {response.status_code}: {response.text[:200]}")
                if i >= WARMUP_REQUESTS:
                    timings.append(elapsed * 1000)
            out[name] = {"p50_ms": round(_percentile(timings, 0.5), 2), "p99_ms": round(_percentile(timings, 0.99), 2),
                         "max_ms": round(max(timings), 2), "requests": len(timings)}  # fmt: skip
            click.echo(f"  {name:<38} p50 {out[name]['p50_ms']:>7.2f} ms  p99 {out[name]['p99_ms']:>7.2f} ms")
    return out


def _browser(url: str, token: str, settings: Settings, spool: Path) -> dict:
    from selenium.webdriver.common.by import By

    from tests.integration.browser import first_contentful_paint, start_browser, wait_js

    driver = start_browser()
    try:
        driver.get(url + "/")
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait_js(driver, "return document.getElementById('m-ingest') !== null", 30, "the overview")
        paints: dict[str, list[float]] = {"overview": [], "symbol page": []}
        responses: dict[str, list[float]] = {"overview": [], "symbol page": []}
        for _ in range(PAINT_LOADS):
            for page, path in (("overview", "/"), ("symbol page", f"/symbols/{SYMBOLS[0]}")):
                driver.get(url + path)
                paints[page].append(first_contentful_paint(driver))
                responses[page].append(driver.execute_script(
                    "return performance.getEntriesByType('navigation')[0].responseEnd"))  # fmt: skip
        _screenshots(driver, url, settings, spool.with_name("spool-steady"))
        driver.get(url + "/")
        wait_js(driver, "return document.getElementById('live-state').dataset.ok === 'yes'", 30, "the live stream")
        symbol = "SSE-BENCH"
        with GuardianProducer(settings, producer_id=f"bench-sse-{uuid.uuid4().hex[:6]}", spool_dir=spool) as producer:
            for i in range(TRANSITIONS):
                old, new = ("CLOSED", "OPEN") if i % 2 == 0 else ("OPEN", "CLOSED")
                producer.circuit_breaker(symbol, old, new, reason="sse bench", trip_count=i)
                producer.flush(10)
                mine = f"window.__guardianSse.filter(m => m.type === 'breaker' && m.data.symbol === '{symbol}')"
                wait_js(driver, f"return {mine}.length >= {i + 1}", 30, f"transition {i + 1} in the browser")
        delays = driver.execute_script(
            f"return window.__guardianSse.filter(m => m.type === 'breaker' && m.data.symbol === '{symbol}')"
            ".map(m => m.at - Number(m.data.event_time) / 1000)"
        )
    finally:
        driver.quit()
    return {
        "first_contentful_paint_ms": {page: {"min": min(v), "max": max(v), "runs": v} for page, v in paints.items()},
        "page_response_end_ms": responses,
        "sse_breaker_delay_ms": {
            "p50": round(_percentile(delays, 0.5), 1),
            "p99": round(_percentile(delays, 0.99), 1),
            "max": round(max(delays), 1),
            "transitions": len(delays),
        },
    }


def _steady(settings: Settings, stop: threading.Event, spool: Path, rate: int = 2000) -> None:
    """Traffic while the screenshots are taken, so the tiles show a fleet at work."""
    with GuardianProducer(settings, producer_id=f"bench-steady-{uuid.uuid4().hex[:6]}", spool_dir=spool) as producer:
        n = 0
        while not stop.is_set():
            for _ in range(rate // 10):
                n += 1
                producer.latency_spike(SYMBOLS[n % len(SYMBOLS)], observed_latency_us=200 + n % 700, threshold_us=5000,
                                       p50_us=100, p99_us=600, p999_us=1500)  # fmt: skip
            stop.wait(0.1)


def _screenshots(driver, url: str, settings: Settings, spool: Path) -> None:
    """The overview and a symbol's page as docs/img shows them (bench/results/dashboard-*.png)."""
    from tests.integration.browser import wait_js

    RESULTS.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    traffic = threading.Thread(target=_steady, args=(settings, stop, spool))
    traffic.start()
    try:
        driver.get(url + "/")
        wait_js(driver, "return document.getElementById('m-p99').textContent !== '–'", 60, "the live numbers")
        driver.save_screenshot(str(RESULTS / "dashboard-overview.png"))
    finally:
        stop.set()
        traffic.join()
    driver.get(f"{url}/symbols/{SYMBOLS[3]}")
    wait_js(driver, "return document.querySelector('#chart canvas') !== null", 30, "the chart")
    wait_js(driver, "return document.querySelectorAll('table.events-timeline tbody tr').length > 5", 30, "the events")
    driver.save_screenshot(str(RESULTS / "dashboard-symbol.png"))


def run_api_bench(settings: Settings, events: int, requests: int = REQUESTS) -> dict:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    result: dict = {"machine": describe_machine(), "events": events, "symbols": len(SYMBOLS),
                    "requests_per_route": requests}  # fmt: skip
    token = "bench-" + uuid.uuid4().hex
    api: subprocess.Popen[bytes] | None = None
    with isolated(settings, "api") as bench, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fleet = Fleet(bench, workdir, "30")
        fleet.env["GUARDIAN_VERIFY_INTERVAL_S"] = "0"
        fleet.start()
        try:
            click.echo(f"API benchmark: {events:,} events of {len(SYMBOLS)} symbols through one worker")
            began = time.perf_counter()
            _load(bench, events, workdir / "spool")
            wait_until(lambda: _lag(bench, fleet.group) == 0, timeout=1800)
            result["load_events_per_s"] = round(events / (time.perf_counter() - began))
            port = free_port()
            env = {**fleet.env, "GUARDIAN_API_PORT": str(port), "GUARDIAN_API_TOKEN": token}
            api = subprocess.Popen([GUARDIAN, "api"], env=env, stdout=open(workdir / "api.log", "wb"),  # noqa: SIM115
                                   stderr=subprocess.STDOUT)  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _up(url), timeout=60)
            click.echo(f"  loaded at {result['load_events_per_s']:,} events/s; {requests} requests per route:")
            result["latency"] = _latencies(url, token, requests)
            result.update(_browser(url, token, bench, workdir / "spool-sse"))
            result["load_average"] = os.getloadavg()
        finally:
            if api is not None:
                api.terminate()
                api.wait(timeout=30)
            fleet.stop()
            admin = AdminClient(client_config(settings))  # the fleet's own state topics
            admin.delete_topics([t for t in admin.list_topics(timeout=10).topics if t.startswith(fleet.group)])
    paint = result["first_contentful_paint_ms"]
    sse = result["sse_breaker_delay_ms"]
    click.echo(f"first contentful paint: overview {paint['overview']['min']:.0f}–{paint['overview']['max']:.0f} ms,"
               f" symbol page {paint['symbol page']['min']:.0f}–{paint['symbol page']['max']:.0f} ms")  # fmt: skip
    click.echo(f"breaker OPEN/CLOSED emit → browser over {sse['transitions']} transitions: p50 {sse['p50']} ms,"
               f" p99 {sse['p99']} ms")  # fmt: skip
    return result


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
