"""The dashboard in a real browser (Debian's headless Chromium) against a real worker, API and stores:
live numbers, the breaker board, a symbol's page, silencing from the page, and a viewer who cannot."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from guardian.api import tokens
from guardian.api.tokens import Role
from guardian.producers import GuardianProducer
from guardian.settings import Settings
from guardian.sinks.live_feed import LIVE_STREAM
from guardian.stack.process import free_port
from tests.integration.browser import first_contentful_paint, wait_js
from tests.integration.helpers import GUARDIAN, WorkerProcess, wait_for

pytestmark = pytest.mark.browser


@dataclass
class Platform:
    url: str
    operator: str  # tokens
    viewer: str
    operator_name: str
    viewer_name: str
    symbols: list[str]
    settings: Settings
    breakers: list[tuple[str, str, str]] = field(default_factory=list)  # (symbol, from, to) to emit
    measurements: dict = field(default_factory=dict)
    emitter_error: BaseException | None = None

    def transition(self, symbol: str, old: str, new: str) -> None:
        self.breakers.append((symbol, old, new))


def _emit_until(stop: threading.Event, platform: Platform, topic: str, spool: Path) -> None:
    """A trading host: latency and drift for each symbol at a rate that changes every second, and the
    breaker transitions the test asks for."""
    try:
        _emit(stop, platform, topic, spool)
    except BaseException as exc:
        platform.emitter_error = exc
        raise


def _emit(stop: threading.Event, platform: Platform, topic: str, spool: Path) -> None:
    with GuardianProducer(platform.settings, topic=topic, spool_dir=spool) as producer:
        tick = 0
        while not stop.is_set():
            tick += 1
            for _ in range(20 + 15 * (tick % 4)):
                for i, symbol in enumerate(platform.symbols):
                    latency = 200 + (tick * 37 + i * 11) % 300
                    producer.latency_spike(symbol, observed_latency_us=latency, threshold_us=900, p50_us=150,
                                           p99_us=latency + 100, p999_us=latency + 300)  # fmt: skip
                    producer.drift(symbol, metric="fill_rate", expected=0.9, observed=0.8, drift_score=0.1 * (tick % 7))
            while platform.breakers:
                symbol, old, new = platform.breakers.pop(0)
                producer.circuit_breaker(symbol, old, new, reason=f"dashboard test {old}->{new}", trip_count=1)
            producer.flush(5)
            stop.wait(0.25)


async def _token(dsn: str, name: str, role: Role) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return await tokens.create(conn, name, role, created_by="test_dashboard")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def platform(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    from confluent_kafka.admin import AdminClient, NewTopic

    tmp = tmp_path_factory.mktemp("dashboard")
    suffix = uuid.uuid4().hex[:6]
    events_topic, alerts_topic = f"test-dash-events-{suffix}", f"test-dash-alerts-{suffix}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(t, num_partitions=n, replication_factor=1)
                                       for t, n in ((events_topic, 4), (alerts_topic, 1))]).values():  # fmt: skip
        future.result(timeout=30)
    # Not a `test-worker-` group: the per-test clean-up deletes those groups' state topics, and this worker
    # lives for the whole module (its state topics are deleted below).
    worker = WorkerProcess(events_topic, tmp, group=f"dash-worker-{suffix}",
                           extra_env={"GUARDIAN_ALERTS_TOPIC": alerts_topic}).start()  # fmt: skip
    port = free_port()
    env = {**os.environ, "GUARDIAN_API_PORT": str(port), "GUARDIAN_EVENTS_TOPIC": events_topic,
           "GUARDIAN_ALERTS_TOPIC": alerts_topic, "GUARDIAN_WORKER_GROUP": worker.group}  # fmt: skip
    env.pop("GUARDIAN_API_TOKEN", None)
    names = {"operator": f"dash-operator-{suffix}", "viewer": f"dash-viewer-{suffix}"}
    issued = {role: asyncio.run(_token(settings.postgres_dsn, name, Role.parse(role))) for role, name in names.items()}
    # An admin must exist for the API to start; the shared stack may have none yet.
    asyncio.run(_token(settings.postgres_dsn, f"dash-admin-{suffix}", Role.ADMIN))
    log = open(tmp / "api.log", "wb")  # noqa: SIM115 - closed below, after the process
    api = subprocess.Popen([GUARDIAN, "api"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    platform = Platform(url, issued["operator"], issued["viewer"], names["operator"], names["viewer"],
                        [f"DASH{suffix.upper()}{i}" for i in range(3)], settings)  # fmt: skip
    stop = threading.Event()
    emitter = threading.Thread(target=_emit_until, args=(stop, platform, events_topic, tmp / "spool"), daemon=True)
    try:
        wait_for(lambda: _healthy(url), 60, f"the API on {url} (log: {tmp / 'api.log'})")
        emitter.start()
        yield platform
    finally:
        stop.set()
        emitter.join(timeout=30)
        api.terminate()
        api.wait(timeout=30)
        log.close()
        worker.stop()
        state = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{worker.group}-")]
        admin.delete_topics([events_topic, alerts_topic, *state])
        artifacts = Path("build/test-artifacts")
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / "dashboard-measurements.json").write_text(json.dumps(platform.measurements, indent=2))


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def log_in(browser: WebDriver, platform: Platform, token: str) -> None:
    browser.get(platform.url + "/")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_js(browser, "return document.getElementById('m-ingest') !== null", 10, "the overview after logging in")


def text_of(browser: WebDriver, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def _has_alert_row(browser: WebDriver) -> bool:
    if browser.find_elements(By.CSS_SELECTOR, "table.timeline tr.kind-alert"):
        return True
    browser.refresh()
    wait_js(browser, "return document.querySelectorAll('table.timeline tbody tr').length > 0", 10, "the timeline")
    return bool(browser.find_elements(By.CSS_SELECTOR, "table.timeline tr.kind-alert"))


def audit_rows(settings: Settings, action: str, actor: str) -> list[dict]:
    async def fetch() -> list[dict]:
        conn = await asyncpg.connect(settings.postgres_dsn)
        try:
            rows = await conn.fetch("SELECT action, actor, status FROM guardian_audit WHERE action = $1 AND actor = $2",
                                    action, actor)  # fmt: skip
            return [dict(r) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_an_operator_watches_the_platform_live_and_silences_an_alert(browser, screenshot, platform: Platform):
    log_in(browser, platform, platform.operator)
    [session] = [c for c in browser.get_cookies() if c["name"] == "guardian_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert platform.operator not in browser.page_source  # the page never holds the token
    browser.get(platform.url + "/")
    platform.measurements["first_contentful_paint_ms"] = first_contentful_paint(browser)

    # Numbers arrive and change as events flow.
    first = wait_js(browser, "const t = document.getElementById('m-ingest').textContent;"
                             " return t !== '–' && t !== '0' ? t : null", 30, "an ingest rate")  # fmt: skip
    wait_js(browser, f"return document.getElementById('m-ingest').textContent !== {json.dumps(first)}", 30,
            "the ingest rate to change")  # fmt: skip
    wait_js(browser, "return document.querySelectorAll('#lagbars .lagbar').length === 4", 15, "lag per partition")
    wait_js(browser, "return document.getElementById('store-postgresql').dataset.up === 'yes'", 10, "store health")
    screenshot("overview")

    # A breaker opens: the board turns red through the live stream, the P0 appears.
    symbol = platform.symbols[0]
    opened_at = time.time()
    platform.transition(symbol, "CLOSED", "OPEN")
    cell = f".cell[data-symbol='{symbol}']"
    wait_js(browser, f"const c = document.querySelector(\"{cell}\"); return c && c.classList.contains('state-open')",
            30, "the breaker cell to turn OPEN")  # fmt: skip
    platform.measurements["breaker_seen_after_s"] = round(time.time() - opened_at, 3)
    row = f"#alerts tr[data-fingerprint] a[href='/symbols/{symbol}']"
    wait_js(browser, f'return document.querySelector("{row}") !== null', 30, "the P0 in active alerts")
    screenshot("breaker-open")

    # The symbol's page: its timeline and its chart.
    browser.find_element(By.CSS_SELECTOR, cell).click()
    wait_js(browser, "return document.querySelectorAll('table.timeline tbody tr.kind-event').length > 10", 30,
            "the timeline")  # fmt: skip
    wait_js(browser, "return document.querySelector('#chart canvas') !== null", 15, "the 24 h chart")
    # The alert's history row is archived from the alerts topic a moment after the live event.
    wait_for(lambda: _has_alert_row(browser), 30, "the alert change in the timeline")
    screenshot("symbol")

    # Silence it from the overview.
    browser.get(platform.url + "/")
    button = f"#alerts tr[data-fingerprint]:has(a[href='/symbols/{symbol}']) [data-action=silence]"
    wait_js(browser, f'return document.querySelector("{button}") !== null', 30, "the silence button")
    browser.find_element(By.CSS_SELECTOR, button).click()
    row = f"#alerts tr[data-fingerprint]:has(a[href='/symbols/{symbol}'])"
    wait_js(browser, f"const r = document.querySelector(\"{row}\"); return r && r.textContent.includes('silenced')",
            30, "the row marked silenced")  # fmt: skip
    screenshot("silenced")
    silences = httpx.get(f"{platform.url}/v1/silences", headers={"Authorization": f"Bearer {platform.operator}"}).json()
    mine = [s for s in silences["items"] if s["matchers"].get("symbol") == symbol]
    assert len(mine) == 1 and mine[0]["created_by"] == f"token:{platform.operator_name}"
    assert [r["status"] for r in audit_rows(platform.settings, "POST /v1/silences",
                                            f"token:{platform.operator_name}")] == [201]  # fmt: skip


def test_a_viewer_sees_no_silence_button_and_the_api_refuses_one(browser, screenshot, platform: Platform):
    symbol = platform.symbols[1]
    platform.transition(symbol, "CLOSED", "OPEN")
    log_in(browser, platform, platform.viewer)
    row = f"#alerts tr[data-fingerprint]:has(a[href='/symbols/{symbol}'])"
    wait_js(browser, f'return document.querySelector("{row}") !== null', 60, "the viewer's alert row")
    assert browser.find_elements(By.CSS_SELECTOR, "[data-action=silence]") == []
    screenshot("viewer")
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/v1/silences', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-Guardian-CSRF': '1'},"
        f" body: JSON.stringify({{matchers: {{symbol: '{symbol}'}}, duration: '1h'}})}}).then(r => done(r.status));"
    )
    assert status == 403
    assert [r["status"] for r in audit_rows(platform.settings, "POST /v1/silences",
                                            f"token:{platform.viewer_name}")] == [403]  # fmt: skip


def test_sse_delay_from_a_breaker_emit_to_the_browser(browser, platform: Platform):
    """Ten OPEN/CLOSED transitions; the delay is the browser's receipt time minus the event's time (one
    host clock). The 100-transition figure comes from `guardian bench dashboard`."""
    symbol = platform.symbols[2]
    log_in(browser, platform, platform.viewer)
    wait_js(browser, "return document.getElementById('live-state').dataset.ok === 'yes'", 15, "the live stream")
    states = ["CLOSED", "OPEN"]
    for i in range(10):
        platform.transition(symbol, states[i % 2], states[(i + 1) % 2])
        mine = f"window.__guardianSse.filter(m => m.type === 'breaker' && m.data.symbol === '{symbol}')"
        wait_js(browser, f"return {mine}.length >= {i + 1}", 60, f"transition {i + 1}")
    received = browser.execute_script(
        f"return window.__guardianSse.filter(m => m.type === 'breaker' && m.data.symbol === '{symbol}')"
        ".map(m => m.at - Number(m.data.event_time) / 1000)"
    )
    # A sanity bound (the alert budget is 5 s end to end); the figures come from the benchmark.
    assert len(received) == 10 and all(0 <= d < 5000 for d in received), received
    platform.measurements["sse_delay_ms"] = sorted(received)


def test_a_reconnecting_stream_resumes_after_its_last_event_id(platform: Platform):
    """What the browser's EventSource does after a drop: the entries it missed come first, then live ones."""
    store = redis.Redis.from_url(platform.settings.redis_url)
    [(before, _)] = store.xrevrange(LIVE_STREAM, count=1) or [(b"0-0", {})]
    missed = [store.xadd(LIVE_STREAM, {"type": "breaker", "symbol": f"RESUME{i}", "from": "CLOSED", "to": "OPEN",
                                       "event_time": "1", "event_id": f"e{i}"}) for i in range(3)]  # fmt: skip
    headers = {"Authorization": f"Bearer {platform.viewer}", "Last-Event-ID": before.decode()}
    ids: list[str] = []
    with httpx.stream("GET", f"{platform.url}/v1/stream", headers=headers, timeout=30) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("id: "):
                ids.append(line.removeprefix("id: "))
            if len(ids) == 3:
                break
    assert ids == [m.decode() for m in missed]
    opened = audit_rows(platform.settings, "GET /v1/stream", f"token:{platform.viewer_name}")
    assert opened and opened[-1]["status"] == 200
