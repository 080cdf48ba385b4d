"""Alert and notification history, and silences' history, against the real services: a real worker archives
the alerts topic and records notification attempts; the CLI reads them back; re-reading the topic adds
nothing; retention deletes as the owner only; pages of the read functions neither skip nor repeat rows."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
import pytest
import redis
import yaml
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from guardian.producers import GuardianProducer
from guardian.settings import Settings
from guardian.sinks import alert_history, silences
from guardian.sinks.audit import operator
from guardian.sinks.storage import HISTORY_JOB, StoragePolicy, upkeep
from guardian.stream_processors.alerts.archive import archive_group
from guardian.stream_processors.alerts.engine import fingerprint
from guardian.stream_processors.alerts.outputs import CHANNEL
from guardian.stream_processors.replay.offsets import committed
from tests.integration.helpers import GUARDIAN, WorkerProcess, fetch_rows, scratch_database, wait_for

RULE = "circuit-breaker-open"


class FlakyReceiver:
    """A webhook receiver answering HTTP 500 to its first POST and 200 after."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's method name
                self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if not outer.calls else 200
                outer.calls.append(status)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        # A path and credentials that must never reach the database.
        self.url = f"http://hook-user:s3cret@127.0.0.1:{self.port}/services/T000/SECRET-TOKEN?key=abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def flaky_receiver() -> Iterator[FlakyReceiver]:
    server = FlakyReceiver()
    yield server
    server.server.shutdown()


def guardian(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GUARDIAN, *args], capture_output=True, text=True, timeout=120, env=dict(os.environ))


def rows(dsn: str, query: str, *args: object) -> list[dict]:
    return [dict(r) for r in asyncio.run(fetch_rows(dsn, query, *args))]


def archive_caught_up(settings: Settings, group: str, topic: str) -> bool:
    """The archive group has committed every partition of `topic` up to its end."""
    from confluent_kafka import Consumer

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    done = committed(admin, group, topic)
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
    try:
        partitions = probe.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        probe.close()
    return all(done.get(p, 0) >= end for p, end in ends.items() if end > 0)


def reset_to_earliest(settings: Settings, group: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    offsets = [TopicPartition(topic, p, 0) for p in range(partitions)]
    wait_for(
        lambda: admin.describe_consumer_groups([group])[group].result(timeout=15).members == [], 60,
        "the archive group empty (the worker left it)",
    )  # fmt: skip
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)])[group].result(timeout=15)
    assert committed(admin, group, topic) == {p: 0 for p in range(partitions)}


def metric(port: int, line_start: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_breaker_changes_and_attempts_are_recorded_and_a_reread_adds_nothing(
    settings: Settings, new_topic, tmp_path, flaky_receiver
):
    events_topic, alerts_topic = new_topic("events"), new_topic("alerts", partitions=3)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({
        "repeat_interval_s": 3600,
        "receivers": {"P0": [{"url": flaky_receiver.url, "max_attempts": 3}]},
        "rules": [{"name": RULE, "kind": "breaker_open", "severity": "P0"}],
    }))  # fmt: skip
    env = {"GUARDIAN_ALERTS_TOPIC": alerts_topic, "GUARDIAN_ALERT_RULES_FILE": str(rules)}
    worker = WorkerProcess(events_topic, tmp_path, extra_env=env).start()
    symbol = f"HIST{uuid.uuid4().hex[:6].upper()}"
    fp = fingerprint(RULE, {"symbol": symbol})
    dsn = settings.postgres_dsn
    changes_of = "SELECT * FROM guardian_alert_changes WHERE symbol = $1 ORDER BY at, id"
    try:
        with GuardianProducer(settings, topic=events_topic, spool_dir=tmp_path / "spool") as producer:
            producer.circuit_breaker(symbol, "CLOSED", "OPEN", reason="history test", trip_count=1)
            producer.flush(10)
            wait_for(lambda: rows(dsn, changes_of, symbol), 60, "the FIRING change archived")
            producer.circuit_breaker(symbol, "OPEN", "CLOSED", reason="recovered", trip_count=1)
            producer.flush(10)
        changes = wait_for(lambda: len(r := rows(dsn, changes_of, symbol)) >= 2 and r, 60, "the RESOLVED change")
        assert [(c["status"], c["fingerprint"], c["rule"], c["severity"]) for c in changes] == [
            ("FIRING", fp, RULE, "P0"), ("RESOLVED", fp, RULE, "P0"),
        ]  # fmt: skip
        firing, resolved = changes
        assert firing["notified_at"] is not None and not firing["repeat"] and not firing["silenced"]
        assert resolved["ends_at"] is not None and json.loads(resolved["labels"]) == {"symbol": symbol}
        for change in changes:  # the trigger event, found by the events table's key
            found = rows(dsn, "SELECT detector FROM guardian_events WHERE event_time = $1 AND event_id = $2",
                         change["event_time"], change["event_id"])  # fmt: skip
            assert [r["detector"] for r in found] == ["CIRCUIT_BREAKER"]

        # Notification attempts: the webhook's 500 then 200 for the FIRING change, a Redis publish each.
        attempts_of = "SELECT * FROM guardian_notifications WHERE symbol = $1 ORDER BY status, channel, attempt"
        expected = {("FIRING", "redis", 1, "delivered"), ("FIRING", "webhook", 1, "retried"),
                    ("FIRING", "webhook", 2, "delivered"), ("RESOLVED", "redis", 1, "delivered"),
                    ("RESOLVED", "webhook", 1, "delivered")}  # fmt: skip
        attempts = wait_for(
            lambda: len(r := rows(dsn, attempts_of, symbol)) >= len(expected) and r, 30, "the attempt rows"
        )
        assert {(a["status"], a["channel"], a["attempt"], a["outcome"]) for a in attempts} == expected
        hooks = {(a["status"], a["attempt"]): a for a in attempts if a["channel"] == "webhook"}
        assert hooks["FIRING", 1]["http_status"] == 500 and hooks["FIRING", 1]["error"] == "HTTP 500"
        assert hooks["FIRING", 2]["http_status"] == 200 and hooks["FIRING", 2]["latency_s"] > 0
        assert {a["receiver"] for a in hooks.values()} == {f"http://127.0.0.1:{flaky_receiver.port}"}
        assert {a["receiver"] for a in attempts if a["channel"] == "redis"} == {CHANNEL}
        by_key = {c["change_key"]: c["status"] for c in changes}  # attempts join their change by the key
        assert {by_key[a["notification_key"]] for a in attempts} == {"FIRING", "RESOLVED"}

        # The CLI reads them back.
        table = guardian("alerts", "history", "--symbol", symbol)
        assert table.returncode == 0, table.stderr
        assert [line.split()[2] for line in table.stdout.splitlines()] == ["RESOLVED", "FIRING"]
        assert "2 row(s)" in table.stderr
        listed = [json.loads(line) for line in guardian("alerts", "history", "--symbol", symbol, "--json",
                                                        "--since", "1h").stdout.splitlines()]  # fmt: skip
        assert [(r["status"], r["fingerprint"]) for r in listed] == [("RESOLVED", fp), ("FIRING", fp)]
        tried = guardian("alerts", "history", "--notifications", "--fingerprint", fp)
        assert tried.returncode == 0 and "retried" in tried.stdout and "HTTP 500" in tried.stdout
        assert "SECRET" not in tried.stdout and "s3cret" not in tried.stdout

        # Re-read the whole alerts topic: the archive inserts nothing new.
        group = archive_group(Settings(worker_group=worker.group))
        wait_for(lambda: archive_caught_up(settings, group, alerts_topic), 30, "the archive's offsets committed")
        worker.stop()
        reset_to_earliest(settings, group, alerts_topic, partitions=3)
        worker = WorkerProcess(events_topic, tmp_path, group=worker.group, extra_env=env).start()
        wait_for(lambda: archive_caught_up(settings, group, alerts_topic), 60, "the archive re-read the topic")
        duplicates = 'guardian_worker_alert_archive_rows_total{result="duplicate"}'
        assert wait_for(lambda: metric(worker.port, duplicates), 10, "the re-read records counted") >= 2
        assert len(rows(dsn, changes_of, symbol)) == 2
        assert len(rows(dsn, attempts_of, symbol)) == len(expected)
        assert worker.alive(), worker.log()[-3000:]
    finally:
        worker.stop()


def test_cli_silences_leave_their_history_and_the_redis_hash(settings: Settings):
    rule = f"hist-{uuid.uuid4().hex[:8]}"
    made = guardian("alerts", "silence", f"rule={rule}", "symbol=AAPL", "--for", "30m", "--comment", "history test")
    assert made.returncode == 0, made.stderr
    silence_id = made.stdout.split()[1]
    client = redis.Redis.from_url(settings.redis_url)
    body = json.loads(client.hget(silences.SILENCES, silence_id))
    assert body["matchers"] == {"rule": rule, "symbol": "AAPL"} and body["created_by"] == operator()
    assert body["comment"] == "history test" and body["expires_at_us"] > datetime.now(UTC).timestamp() * 1e6
    listed = guardian("alerts", "silences")
    assert silence_id in listed.stdout and f"by {operator()}" in listed.stdout

    [row] = rows(settings.postgres_dsn, "SELECT * FROM guardian_silences WHERE id = $1", silence_id)
    assert json.loads(row["matchers"]) == {"rule": rule, "symbol": "AAPL"} and row["created_by"] == operator()
    assert timedelta(minutes=29) < row["expires_at"] - row["starts_at"] <= timedelta(minutes=30, seconds=1)

    assert guardian("alerts", "unsilence", silence_id).returncode == 0
    assert client.hget(silences.SILENCES, silence_id) is None
    [ended] = rows(settings.postgres_dsn, "SELECT * FROM guardian_silence_expirations WHERE silence_id = $1",
                   silence_id)  # fmt: skip
    assert ended["by"] == operator()
    history = guardian("alerts", "silences", "--history", "--limit", "1000")
    [line] = [line for line in history.stdout.splitlines() if line.startswith(silence_id)]
    assert "ended" in line and operator() in line
    assert guardian("alerts", "unsilence", silence_id).returncode != 0  # ended already: nothing to end


def _change(n: int, at_us: int, symbol: str) -> tuple:
    record = {"fingerprint": f"fp{n:04d}", "rule": "r", "severity": "P1", "status": "FIRING", "symbol": symbol,
              "labels": {"symbol": symbol}, "summary": f"change {n}", "starts_at": at_us, "ends_at": None,
              "event_id": str(uuid.uuid4()), "event_time": at_us, "notified_at": at_us}  # fmt: skip
    return alert_history.change_row(record, 0, n)


def test_pages_neither_skip_nor_repeat_and_inserts_are_idempotent(settings: Settings):
    with scratch_database(settings, "history_pages") as db:

        async def run() -> None:
            conn = await asyncpg.connect(db.app)
            try:
                base = int(datetime(2026, 11, 30, tzinfo=UTC).timestamp() * 1e6)
                # 250 rows, some sharing a time: the id breaks ties.
                changes = [_change(n, base + (n // 3) * 1_000_000, "PAGE") for n in range(250)]
                assert await alert_history.insert_changes(conn, changes) == 250
                assert await alert_history.insert_changes(conn, changes[:10]) == 0
                seen, cursor, pages = [], None, 0
                while True:
                    page = await alert_history.alert_changes(conn, symbol="PAGE", before=cursor, limit=100)
                    seen += [item["id"] for item in page.items]
                    pages += 1
                    if page.next_cursor is None:
                        break
                    cursor = page.next_cursor
                assert pages == 3 and len(seen) == len(set(seen)) == 250
                assert seen == sorted(seen, reverse=True)  # same order as (at, id) desc here
                since = await alert_history.alert_changes(
                    conn, since=datetime(2026, 11, 30, 0, 1, tzinfo=UTC), limit=1000
                )
                assert len(since.items) == 250 - 180 and since.next_cursor is None

                now = datetime.now(UTC)
                attempt = alert_history.Attempt(
                    "k1",
                    "fp0001",
                    "PAGE",
                    "r",
                    "FIRING",
                    "webhook",
                    "http://h:1",
                    1,
                    "retried",
                    now,
                    http_status=500,
                    error="HTTP 500",
                    latency_s=0.01,
                )
                assert await alert_history.insert_notifications(conn, [attempt]) == 1
                assert await alert_history.insert_notifications(conn, [attempt]) == 0  # a redelivery
                [got] = (await alert_history.notifications(conn, fingerprint="fp0001")).items
                assert (got["outcome"], got["http_status"], got["receiver"]) == ("retried", 500, "http://h:1")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):  # append-only for the application
                    await conn.execute("DELETE FROM guardian_alert_changes")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute("UPDATE guardian_notifications SET outcome = 'delivered'")
            finally:
                await conn.close()

        asyncio.run(run())


def test_retention_deletes_old_history_as_the_owner_and_records_the_job(settings: Settings):
    with scratch_database(settings, "history_retention") as db:

        async def run() -> None:
            app = await asyncpg.connect(db.app)
            try:
                old = int((datetime.now(UTC) - timedelta(days=30)).timestamp() * 1e6)
                new = int(datetime.now(UTC).timestamp() * 1e6)
                await alert_history.insert_changes(app, [_change(1, old, "OLD"), _change(2, new, "NEW")])
                await app.execute(
                    "INSERT INTO guardian_silences (id, matchers, starts_at, expires_at, created_by) VALUES"
                    " ('old', '{}', now() - interval '30 days', now() - interval '29 days', 'x'),"
                    " ('new', '{}', now(), now() + interval '1 hour', 'x')"
                )
                await app.execute("INSERT INTO guardian_silence_expirations (silence_id, by) VALUES ('old', 'x')")
            finally:
                await app.close()
            lines = await upkeep(db.admin, StoragePolicy.from_settings(Settings(retention_days=7)))
            assert "deleted 1 row(s) from guardian_alert_changes (retention)" in lines
            owner = await asyncpg.connect(db.admin)
            try:
                assert [r["symbol"] for r in await owner.fetch("SELECT symbol FROM guardian_alert_changes")] == ["NEW"]
                assert [r["id"] for r in await owner.fetch("SELECT id FROM guardian_silences")] == ["new"]
                assert await owner.fetchval("SELECT count(*) FROM guardian_silence_expirations") == 0
                job = await owner.fetchrow("SELECT * FROM guardian_storage_jobs WHERE job = $1", HISTORY_JOB)
                assert job["last_success"] is not None and job["failures"] == 0
            finally:
                await owner.close()

        asyncio.run(run())


def test_a_silence_redis_refuses_is_recorded_as_ended_at_once(settings: Settings):
    from redis.asyncio import Redis

    from guardian.stack.process import free_port

    with scratch_database(settings, "history_silences") as db:

        async def run() -> None:
            conn = await asyncpg.connect(db.app)
            nobody = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)  # nothing listens there
            try:
                with pytest.raises(silences.SilenceNotApplied):
                    await silences.create(nobody, conn, {"rule": "r"}, created_by="token:ops", duration_s=60)
                [row] = await conn.fetch(
                    "SELECT s.created_by, e.by FROM guardian_silences s JOIN guardian_silence_expirations e"
                    " ON e.silence_id = s.id"
                )
                assert (row["created_by"], row["by"]) == ("token:ops", silences.APPLY_FAILED)
                with pytest.raises(silences.SilenceError, match="not in the future"):
                    await silences.create(nobody, conn, {"rule": "r"}, created_by="x", duration_s=0)
            finally:
                await nobody.aclose()
                await conn.close()

        asyncio.run(run())
