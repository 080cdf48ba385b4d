"""The query API against the real PostgreSQL and Redis: roles, every route's shape, cursors, audit."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from guardian.api import tokens
from guardian.api.app import create_app
from guardian.api.tokens import Role
from guardian.errors import ConfigError
from guardian.settings import Settings
from tests.integration.helpers import scratch_database, wait_for

BREAK_GLASS = "test-" + uuid.uuid4().hex


def _run(dsn: str, work):
    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def role_tokens(settings: Settings) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    return {role.label: _run(settings.postgres_dsn, lambda db, r=role: tokens.create(
        db, f"test-{r.label}-{suffix}", r, created_by="test"))
        for role in Role}  # fmt: skip


@pytest.fixture(scope="module")
def client(settings: Settings):
    with TestClient(create_app(settings.model_copy(update={"api_token": BREAK_GLASS}))) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_rows(settings: Settings, target: str) -> list[dict]:
    rows = _run(settings.postgres_dsn, lambda db: db.fetch(
        "SELECT actor, action, status, detail::text FROM guardian_audit WHERE target = $1 ORDER BY id", target,
    ))  # fmt: skip
    return [dict(r) for r in rows]


async def _insert_events(dsn: str, symbol: str, count: int, *, detector: str = "DRIFT_MONITOR") -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO guardian_events (event_time, event_id, producer_id, sequence, host, symbol, detector,"
            " severity, schema_version, payload_type, payload) VALUES (now() - make_interval(secs => $1),"
            " gen_random_uuid(), 'api-test', $2, 'h', $3, $5, 'INFO', 1, 'Drift', $4)",
            [(count - i, i, symbol, f'{{"drift_score": {i}, "metric": "m"}}', detector) for i in range(count)],
        )
    finally:
        await conn.close()


def test_refuses_to_start_without_an_admin(settings: Settings):
    with scratch_database(settings, "api_noadmin") as db:
        bare = settings.model_copy(update={"api_token": None, "postgres_dsn": db.app})
        with pytest.raises(ConfigError, match="token create"), TestClient(create_app(bare)):
            pass
        _run(db.app, lambda conn: tokens.create(conn, "first-admin", Role.ADMIN, created_by="test"))
        with TestClient(create_app(bare)) as started:
            assert started.get("/healthz").json() == {"status": "ok"}


# route -> the least role that may call it
ROUTES = {
    ("GET", "/v1/events"): Role.VIEWER,
    ("GET", "/v1/hot/latest"): Role.VIEWER,
    ("GET", "/v1/hot/breakers"): Role.VIEWER,
    ("GET", "/v1/symbols"): Role.VIEWER,
    ("GET", "/v1/status"): Role.VIEWER,
    ("GET", "/openapi.json"): Role.VIEWER,
    ("GET", "/v1/audit"): Role.ADMIN,
    ("GET", "/v1/tokens"): Role.ADMIN,
}


def test_every_route_checks_the_role_and_every_call_is_audited_under_the_tokens_name(
    client, settings: Settings, role_tokens
):
    names = {r: next(t.name for t in _run(settings.postgres_dsn, tokens.listing) if t.id == tokens.split(tok)[0])
             for r, tok in role_tokens.items()}  # fmt: skip
    callers = {"none": None, "bad": "gdn_0000000000_wrong", **role_tokens}
    for (method, path), least in ROUTES.items():
        for who, token in callers.items():
            marker = uuid.uuid4().hex[:8]
            response = client.request(method, path, params={"probe": marker},
                                      headers=bearer(token) if token else {})  # fmt: skip
            expected = 401 if who in ("none", "bad") else 200 if Role.parse(who) >= least else 403
            assert response.status_code == expected, (method, path, who, response.text)
            rows = [r for r in audit_rows(settings, path) if marker in r["detail"]]
            assert len(rows) == 1, (path, who)
            actor = {"none": "anonymous", "bad": f"invalid-token:{tokens.fingerprint('gdn_0000000000_wrong')}"}.get(
                who, f"token:{names.get(who)}")  # fmt: skip
            assert rows[0]["actor"] == actor and rows[0]["status"] == expected, (path, who, rows[0])
    # 404s too, under the caller's name
    marker = uuid.uuid4().hex
    assert client.get(f"/v1/no-such-{marker}", headers=bearer(role_tokens["viewer"])).status_code == 404
    assert [r["status"] for r in audit_rows(settings, f"/v1/no-such-{marker}")] == [404]
    secrets_seen = _run(settings.postgres_dsn, lambda db: db.fetchval(
        "SELECT count(*) FROM guardian_audit WHERE detail::text LIKE '%' || $1 || '%' OR actor LIKE '%' || $1 || '%'",
        tokens.split(role_tokens["admin"])[1]))  # fmt: skip
    assert secrets_seen == 0


def test_docs_need_a_token_health_and_metrics_do_not(client, role_tokens):
    assert client.get("/docs").status_code == 401
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/docs", headers=bearer(role_tokens["viewer"])).status_code == 200
    schema = client.get("/openapi.json", headers=bearer(role_tokens["viewer"])).json()
    assert "/v1/symbols/{symbol}/as-of" in schema["paths"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert "guardian_api_requests_total" in client.get("/metrics").text


def test_tokens_created_and_revoked_through_the_api(client, settings: Settings, role_tokens):
    admin = bearer(role_tokens["admin"])
    name = f"made-{uuid.uuid4().hex[:6]}"
    created = client.post("/v1/tokens", json={"name": name, "role": "viewer"}, headers=admin)
    assert created.status_code == 201
    new = created.json()["token"]
    assert client.get("/v1/status", headers=bearer(new)).status_code == 200
    assert client.post("/v1/tokens", json={"name": name, "role": "admin"}, headers=admin).status_code == 409
    listed = {t["name"]: t for t in client.get("/v1/tokens", headers=admin).json()}
    assert listed[name]["role"] == "viewer" and listed[name]["revoked_at"] is None and "token" not in listed[name]
    assert client.delete(f"/v1/tokens/{name}", headers=admin).json()["revoked_by"].startswith("token:test-admin-")
    assert client.get("/v1/status", headers=bearer(new)).status_code == 401
    assert client.delete(f"/v1/tokens/{name}", headers=admin).status_code == 409
    # An operator cannot make tokens.
    assert client.post("/v1/tokens", json={"name": name + "x", "role": "admin"},
                       headers=bearer(role_tokens["operator"])).status_code == 403  # fmt: skip


def test_events_newest_first_in_cursor_pages(client, settings: Settings, role_tokens):
    symbol = f"API{uuid.uuid4().hex[:6]}"
    asyncio.run(_insert_events(settings.postgres_dsn, symbol, 250))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"symbol": symbol, "limit": 100, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/events", params=params, headers=bearer(role_tokens["viewer"]))
        assert response.status_code == 200
        body = response.json()
        seen += [e["payload"]["drift_score"] for e in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == list(range(249, -1, -1))
    bad = client.get("/v1/events", params={"cursor": "not-a-cursor"}, headers=bearer(role_tokens["viewer"]))
    assert bad.status_code == 400


def test_hot_view_routes_read_redis(client, settings: Settings, role_tokens):
    symbol = f"HOT{uuid.uuid4().hex[:6]}"
    store = redis.Redis.from_url(settings.redis_url)
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)

    def doc(i: int, detector: str, payload: dict) -> dict:
        return {"event_id": str(uuid.uuid4()), "producer_id": "p", "sequence": i, "host": "h", "symbol": symbol,
                "detector": detector, "event_time": now_us - (300 - i) * 1000, "severity": "WARN", "schema_version": 1,
                "payload_type": "x", "payload": payload}  # fmt: skip

    opened = {"from_state": "CLOSED", "to_state": "OPEN", "reason": "test", "trip_count": 3, "cooldown_seconds": 5}
    breaker = doc(299, "CIRCUIT_BREAKER", opened)
    try:
        # 300 events, the last 10 sharing one microsecond: the cursor must neither skip nor repeat them
        events = [doc(i, "DRIFT_MONITOR", {"drift_score": i}) for i in range(300)]
        for e in events[-10:]:
            e["event_time"] = now_us
        store.zadd(f"guardian:recent:{symbol}", {orjson.dumps(e): e["event_time"] for e in events})
        store.set(f"guardian:latest:{symbol}:CIRCUIT_BREAKER", orjson.dumps(breaker))
        store.hset(f"guardian:breaker:{symbol}", mapping={"state": "OPEN", "event_time": breaker["event_time"],
                                                           "event": orjson.dumps(breaker)})  # fmt: skip
        viewer = bearer(role_tokens["viewer"])
        board = {b["symbol"]: b for b in client.get("/v1/hot/breakers", headers=viewer).json()}
        assert board[symbol]["state"] == "OPEN" and board[symbol]["trip_count"] == 3
        latest = client.get("/v1/hot/latest", params={"symbol": symbol}, headers=viewer).json()
        assert [e["event_id"] for e in latest] == [breaker["event_id"]]
        assert symbol in client.get("/v1/symbols", headers=viewer).json()
        seen, cursor = [], None
        while True:
            params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            body = client.get(f"/v1/hot/recent/{symbol}", params=params, headers=viewer).json()
            seen += [e["sequence"] for e in body["items"]]
            if not (cursor := body["next_cursor"]):
                break
        assert sorted(seen) == list(range(300)) and len(seen) == 300
        assert client.get(f"/v1/hot/recent/NONE{symbol}", headers=viewer).status_code == 404
    finally:
        store.delete(
            f"guardian:recent:{symbol}", f"guardian:latest:{symbol}:CIRCUIT_BREAKER", f"guardian:breaker:{symbol}"
        )


async def _insert_at(dsn: str, symbol: str, rows: list[tuple[datetime, datetime, int, str, dict]]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO guardian_events (event_time, event_id, producer_id, sequence, host, symbol, detector,"
            " severity, schema_version, payload_type, payload, ingested_at) VALUES ($1, gen_random_uuid(), 'asof',"
            " $3, 'h', $4, $5, 'INFO', 1, 'x', $6, $2)",
            [(t, stored, seq, symbol, det, orjson.dumps(p).decode()) for t, stored, seq, det, p in rows],
        )
    finally:
        await conn.close()


def test_as_of_shows_what_the_hot_view_could_show_then(client, settings: Settings, role_tokens):
    symbol = f"ASOF{uuid.uuid4().hex[:6]}"
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    minute = timedelta(minutes=1)
    opened = {"from_state": "CLOSED", "to_state": "OPEN", "reason": "spike", "trip_count": 1}
    closed = {"from_state": "HALF_OPEN", "to_state": "CLOSED", "reason": "ok", "trip_count": 1}
    asyncio.run(_insert_at(settings.postgres_dsn, symbol, [
        (t0, t0, 1, "CIRCUIT_BREAKER", opened),
        (t0 + 10 * minute, t0 + 10 * minute, 2, "CIRCUIT_BREAKER", closed),
        (t0 + minute, t0 + minute, 3, "DRIFT_MONITOR", {"metric": "fill_rate", "drift_score": 1.5}),
        # replayed much later: it was not on screen at t0 + 5 min
        (t0 + 2 * minute, t0 + 30 * minute, 4, "DRIFT_MONITOR", {"metric": "fill_rate", "drift_score": 9.9}),
    ]))  # fmt: skip
    viewer = bearer(role_tokens["viewer"])

    def as_of(at: datetime) -> dict:
        response = client.get(f"/v1/symbols/{symbol}/as-of", params={"at": at.isoformat()}, headers=viewer)
        assert response.status_code == 200, response.text
        return response.json()

    body = as_of(t0 + 5 * minute)
    assert body["breaker"]["state"] == "OPEN" and body["drift"]["fill_rate"]["payload"]["drift_score"] == 1.5
    assert body["events_24h"] == 3  # counted by event time: the late row too
    late = as_of(t0 + 40 * minute)
    assert late["breaker"]["state"] == "CLOSED" and late["drift"]["fill_rate"]["payload"]["drift_score"] == 9.9
    before = as_of(t0 - minute)
    assert before["breaker"] is None and before["latest"] == {} and before["events_24h"] == 0


def test_status_reports_stores_and_lag_per_partition(client, role_tokens, settings: Settings):
    body = client.get("/v1/status", headers=bearer(role_tokens["viewer"])).json()
    assert body["stores"]["postgresql"]["up"] and body["stores"]["redis"]["up"] and body["stores"]["kafka"]["up"]
    assert [p["partition"] for p in body["lag"]] == list(range(settings.events_partitions))
    assert body["total_lag"] == sum(p["lag"] for p in body["lag"])


def test_silences_through_the_api_leave_history_and_audit(client, settings: Settings, role_tokens):
    operator, viewer = bearer(role_tokens["operator"]), bearer(role_tokens["viewer"])
    symbol = f"SIL{uuid.uuid4().hex[:6]}"
    body = {"matchers": {"symbol": symbol}, "duration": "1h", "comment": "maintenance"}
    assert client.post("/v1/silences", json=body, headers=viewer).status_code == 403
    assert client.post("/v1/silences", json={**body, "duration": "soon"}, headers=operator).status_code == 422
    made = client.post("/v1/silences", json=body, headers=operator)
    assert made.status_code == 201, made.text
    silence = made.json()
    assert silence["created_by"].startswith("token:test-operator-")
    active = client.get("/v1/silences", headers=viewer).json()["items"]
    assert [s["id"] for s in active if s["matchers"] == {"symbol": symbol}] == [silence["id"]]
    # The dashboard's session cookie alone cannot change anything: the page's script adds a header.
    cookie_only = TestClient(client.app, cookies={"guardian_session": role_tokens["operator"]})
    assert cookie_only.delete(f"/v1/silences/{silence['id']}").status_code == 403
    assert client.delete(f"/v1/silences/{silence['id']}", headers=operator).status_code == 200
    assert client.delete(f"/v1/silences/{silence['id']}", headers=operator).status_code == 404
    history = client.get("/v1/silences/history", params={"limit": 50}, headers=viewer).json()["items"]
    ended = next(s for s in history if s["id"] == silence["id"])
    assert ended["expired_by"] == silence["created_by"] and ended["comment"] == "maintenance"
    actions = [(r["action"], r["status"]) for r in audit_rows(settings, f"/v1/silences/{silence['id']}")]
    assert actions == [("DELETE /v1/silences/{silence_id}", 403), ("DELETE /v1/silences/{silence_id}", 200),
                       ("DELETE /v1/silences/{silence_id}", 404)]  # fmt: skip


async def _alert_story(dsn: str, symbol: str, t0: datetime) -> str:
    """A trigger event, its alert's FIRING and RESOLVED changes and three notification attempts."""
    conn = await asyncpg.connect(dsn)
    fingerprint = uuid.uuid4().hex[:16]
    event_id = uuid.uuid4()
    try:
        await conn.execute(
            "INSERT INTO guardian_events (event_time, event_id, producer_id, sequence, host, symbol, detector,"
            " severity, schema_version, payload_type, payload) VALUES ($1, $2, 'story', 1, 'h', $3,"
            " 'CIRCUIT_BREAKER', 'CRITICAL', 1, 'CircuitBreakerTransition', '{\"to_state\": \"OPEN\"}')",
            t0, event_id, symbol,
        )  # fmt: skip
        for i, (status, at) in enumerate(
            (("FIRING", t0 + timedelta(seconds=1)), ("RESOLVED", t0 + timedelta(seconds=9)))
        ):
            await conn.execute(
                "INSERT INTO guardian_alert_changes (change_key, at, fingerprint, rule, severity, status, symbol,"
                " labels, summary, starts_at, ends_at, event_id, event_time, kafka_partition, kafka_offset)"
                " VALUES ($1, $2, $3, 'circuit-breaker-open', 'P0', $4, $5, $6, 'open', $7, $8, $9, $10, 0, $11)",
                uuid.uuid4().hex, at, fingerprint, status, symbol, orjson.dumps({"symbol": symbol}).decode(), t0,
                at if status == "RESOLVED" else None, event_id, t0, i,
            )  # fmt: skip
        for attempt, (outcome, seconds) in enumerate((("retried", 2), ("delivered", 3), ("delivered", 10)), 1):
            await conn.execute(
                "INSERT INTO guardian_notifications (notification_key, fingerprint, symbol, rule, status, channel,"
                " receiver, attempt, outcome, http_status, latency_s, at) VALUES ($1, $2, $3, 'circuit-breaker-open',"
                " 'FIRING', 'webhook', 'http://pager:9000', $4, $5, $6, 0.05, $7)",
                f"{fingerprint}-{seconds // 10}", fingerprint, symbol, attempt, outcome,
                500 if outcome == "retried" else 200, t0 + timedelta(seconds=seconds),
            )  # fmt: skip
    finally:
        await conn.close()
    return fingerprint


def test_alert_history_its_story_and_the_symbols_timeline(client, settings: Settings, role_tokens):
    viewer = bearer(role_tokens["viewer"])
    symbol = f"STORY{uuid.uuid4().hex[:6]}"
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    fingerprint = asyncio.run(_alert_story(settings.postgres_dsn, symbol, t0))
    changes = client.get("/v1/alerts/history", params={"symbol": symbol}, headers=viewer).json()["items"]
    assert [c["status"] for c in changes] == ["RESOLVED", "FIRING"]
    story = client.get(f"/v1/alerts/{fingerprint}", headers=viewer).json()
    assert [e["symbol"] for e in story["triggers"]] == [symbol] and len(story["context"]) == 1
    assert sorted(n["outcome"] for n in story["notifications"]) == ["delivered", "delivered", "retried"]
    assert client.get("/v1/alerts/nope", headers=viewer).status_code == 404
    # The timeline: 1 event, 2 changes, 3 attempts, interleaved newest first, in pages of 2.
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/symbols/{symbol}/timeline", params=params, headers=viewer).json()
        seen += [(item["kind"], item["at"]) for item in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert [kind for kind, _ in seen] == ["notification", "alert", "notification", "notification", "alert", "event"]
    assert [at for _, at in seen] == sorted((at for _, at in seen), reverse=True)
    only = client.get(f"/v1/symbols/{symbol}/timeline", params={"kind": ["alert"]}, headers=viewer).json()
    assert [i["kind"] for i in only["items"]] == ["alert", "alert"]


def test_operators_start_a_verification_and_a_replay_plan(client, settings: Settings, role_tokens):
    operator = bearer(role_tokens["operator"])
    assert client.post("/v1/ops/verify", json={"since": "1m"}, headers=bearer(role_tokens["viewer"])).status_code == 403
    started = client.post("/v1/ops/replay", json={"from": "5m"}, headers=operator)
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]

    def finished() -> dict | None:
        job = client.get(f"/v1/ops/{job_id}", headers=operator).json()
        return job if job["state"] != "running" else None

    job = wait_for(finished, 60, "the replay plan")
    assert job["state"] == "succeeded", job["output"]
    assert job["command"][:2] == ["guardian", "replay"] and "--dry-run" in job["command"]
    rows = _run(settings.postgres_dsn, lambda db: db.fetch(
        "SELECT actor FROM guardian_audit WHERE action = 'replay --dry-run' ORDER BY id DESC LIMIT 1"))  # fmt: skip
    assert rows[0]["actor"].startswith("token:test-operator-") and " via " in rows[0]["actor"]
