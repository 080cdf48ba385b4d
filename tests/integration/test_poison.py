"""Poison input through a real worker: every record ends up a row or a dead letter, and nothing stalls.

Records are made the way a client that never went through emit() would: a raw confluent-kafka
producer with Avro from the schema (EventCodec, single-object framing). Hypothesis generates
schema-valid events with extreme values (NUL and other unicode, long strings, NaN and infinities,
times far in the past and future, ids that are not UUIDs, duplicate ids); bit-flipped, truncated
and oversized records are mixed in, between thousands of ordinary events.
"""

from __future__ import annotations

import json
import random
import time
import uuid

import httpx
from confluent_kafka import Producer
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from guardian.schemas.codec import EventCodec
from guardian.schemas.errors import CodecError
from guardian.settings import Settings
from guardian.stream_processors.dlq_tools import read_dlq
from tests.integration.helpers import WorkerProcess, pg_fetchval, wait_for

NOW_US = time.time_ns() // 1000
GOOD = 3_000
FUZZED = 1_500
SPIKE = "io.guardian.events.LatencySpike"
BREAKER = "io.guardian.events.CircuitBreakerTransition"
DRIFT = "io.guardian.events.Drift"
LONG = (1 << 63) - 1
DETECTORS = ["LATENCY_SPIKE_DETECTOR", "DRIFT_MONITOR", "CIRCUIT_BREAKER"]
NAN_DRIFT = {"metric": "m", "expected": 0.0, "observed": 1.0, "drift_score": float("nan"), "window_seconds": 1}
HUGE_BREAKER = {"from_state": "CLOSED", "to_state": "OPEN", "reason": "r" * 960_000, "trip_count": 1,
                "cooldown_seconds": 1}  # fmt: skip


def ordinary(i: int, producer: str) -> dict:
    return {
        "event_id": str(uuid.uuid4()), "producer_id": producer, "sequence": i + 1, "host": "fuzz-host",
        "symbol": f"G{i % 13}", "detector": "DRIFT_MONITOR", "event_time": NOW_US + i, "severity": "INFO",
        "schema_version": 1,
        "payload": (DRIFT, {"metric": "slippage", "expected": 0.5, "observed": 0.6, "drift_score": 0.1,
                            "window_seconds": 60}),
    }  # fmt: skip


def _text(max_size: int) -> st.SearchStrategy[str]:
    # Any unicode (NUL included) but surrogates, which UTF-8 cannot carry: Avro could not encode them.
    return st.text(st.characters(blacklist_categories=("Cs",)), max_size=max_size)


def _float() -> st.SearchStrategy[float]:
    return st.floats(allow_nan=True, allow_infinity=True)


_event_times = st.one_of(
    st.integers(-LONG - 1, LONG),
    st.integers(NOW_US - 3_600_000_000, NOW_US + 3_600_000_000),
    st.sampled_from([0, -1, 253_402_300_800_000_000, -62_135_596_800_000_001, NOW_US]),
)
_ids = st.one_of(st.uuids().map(str), _text(40), st.sampled_from(["", "not-a-uuid", "{" + str(uuid.UUID(int=1)) + "}"]))
_payloads = st.one_of(
    st.tuples(st.just(SPIKE), st.fixed_dictionaries({
        "observed_latency_us": st.integers(-LONG - 1, LONG), "threshold_us": st.integers(-LONG - 1, LONG),
        "p50_us": st.integers(0, 10**6), "p99_us": st.integers(0, 10**6), "p999_us": st.integers(0, 10**6),
        "window_seconds": st.integers(-(2**31), 2**31 - 1), "z_score": _float(), "order_path": _text(300),
        "venue": _text(300),
    })),
    st.tuples(st.just(DRIFT), st.fixed_dictionaries({
        "metric": _text(300), "expected": _float(), "observed": _float(), "drift_score": _float(),
        "window_seconds": st.integers(-(2**31), 2**31 - 1),
    })),
    st.tuples(st.just(BREAKER), st.fixed_dictionaries({
        "from_state": st.sampled_from(["CLOSED", "OPEN", "HALF_OPEN"]),
        "to_state": st.sampled_from(["CLOSED", "OPEN", "HALF_OPEN"]), "reason": _text(5_000),
        "trip_count": st.integers(-(2**31), 2**31 - 1), "cooldown_seconds": st.integers(0, 10**6),
    })),
)  # fmt: skip
_events = st.fixed_dictionaries(
    {
        "event_id": _ids, "producer_id": _text(200), "sequence": st.integers(-LONG - 1, LONG), "host": _text(300),
        "symbol": _text(100), "detector": st.sampled_from(DETECTORS),
        "event_time": _event_times, "severity": st.sampled_from(["INFO", "WARNING", "CRITICAL"]),
        "schema_version": st.integers(-(2**31), 2**31 - 1), "payload": _payloads,
    }
)  # fmt: skip


def fuzzed_events(count: int) -> list[dict]:
    collected: list[dict] = []

    @hypothesis_settings(max_examples=count, database=None, derandomize=True, phases=[Phase.generate],
                         suppress_health_check=list(HealthCheck), deadline=None)  # fmt: skip
    @given(_events)
    def collect(event: dict) -> None:
        collected.append(event)

    collect()
    return collected


def edge_cases(producer: str) -> list[dict]:
    """The records of the first report, and their kin: each breaks exactly one rule."""
    cases = []
    for change in (
        {"symbol": "NUL\x00SYM"},  # stalled every PostgreSQL write of the fleet
        {"event_time": -62_135_596_800_000_001},  # before year 1
        {"event_time": 253_402_300_800_000_000},  # after year 9999
        {"event_id": "not-a-uuid"},
        {"symbol": "X" * 3_000},  # over the btree row limit
        {"payload": (DRIFT, NAN_DRIFT)},
        {"payload": (BREAKER, HUGE_BREAKER)},  # its alert would be 1.29 MB
    ):
        cases.append({**ordinary(len(cases), producer), **change})
    return cases


def mangled(record: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return record[: rng.randrange(0, len(record))]
    flipped = bytearray(record)
    for _ in range(rng.randint(1, 4)):
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
    return bytes(flipped)


def test_every_record_is_stored_or_dead_lettered_and_good_ones_flow_past_the_bad(
    settings: Settings, new_topic, tmp_path
):
    events_topic, dlq_topic = new_topic("poison"), new_topic("poison-dlq", partitions=3)
    producer_id = f"fuzz-{uuid.uuid4().hex[:8]}"
    codec = EventCodec()
    rng = random.Random(11)
    good = [ordinary(i, producer_id) for i in range(GOOD)]
    records: list[tuple[bytes, bytes, str | None]] = []  # (key, value, event id if it decodes as sent)
    for event in fuzzed_events(FUZZED) + edge_cases(producer_id):
        records.append((b"fuzz", codec.encode(event), event["event_id"]))
    dup = good[5]
    records.append((b"dup", codec.encode({**dup, "sequence": 99}), dup["event_id"]))  # a duplicate id
    for i in range(300):  # may still decode, as the same event or another: then it must be stored
        value = mangled(codec.encode(good[i]), rng)
        records.append((b"mangled", value, _decoded_id(codec, value)))
    records.append((b"big", b"\xc3\x01" + rng.randbytes(900_000), None))  # oversized garbage
    rng.shuffle(records)
    good_records = [(b"good", codec.encode(e), e["event_id"]) for e in good]
    # The good ones are interleaved with the bad ones: each bad record has good ones behind it.
    mixed = [r for pair in zip(good_records, records, strict=False) for r in pair] + good_records[len(records) :]

    worker = WorkerProcess(events_topic, tmp_path, extra_env={"GUARDIAN_DLQ_TOPIC": dlq_topic}).start()
    sent: list[tuple[int, int, str | None, bytes]] = []  # (partition, offset, event id, kind)
    raw = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    try:
        for key, value, event_id in mixed:
            raw.produce(events_topic, value, key, on_delivery=lambda e, m, i=event_id: sent.append(
                (m.partition(), m.offset(), i, m.key())) if e is None else None)  # fmt: skip
            raw.poll(0)
        assert raw.flush(60) == 0
        assert len(sent) == len(mixed)
        produced_at = time.monotonic()
        good_ids = [e["event_id"] for e in good]

        def good_stored() -> bool:
            query = "SELECT count(DISTINCT event_id) FROM guardian_events WHERE event_id = ANY($1::uuid[])"
            count = pg_fetchval(settings.postgres_dsn, query, good_ids)
            return count == GOOD  # a bit flip in a time may store a good id twice: distinct

        wait_for(good_stored, 60, f"all {GOOD} good events in PostgreSQL")
        good_latency_s = time.monotonic() - produced_at
        dlq_settings = settings.model_copy(update={"dlq_topic": dlq_topic})
        sent_ids = [i for _, _, i, _ in sent if i]

        def accounted() -> tuple[set, set] | None:
            letters = read_dlq(dlq_settings, None)
            lettered = {(int(x.headers["source.partition"]), int(x.headers["source.offset"])) for x in letters}
            stored = _stored_ids(settings, sent_ids)
            missing = [(p, o) for p, o, i, _ in sent if (p, o) not in lettered and (i or "").lower() not in stored]
            return (lettered, stored, letters) if not missing and len(lettered) <= len(sent) else None

        lettered, stored, letters = wait_for(accounted, 60, "every record stored or dead-lettered", interval=1)
        good_offsets = {(p, o) for p, o, _, kind in sent if kind == b"good"}
        assert not good_offsets & lettered, "a good event was dead-lettered"
        rules = {x.headers.get("rule") for x in letters}
        assert {"no_nul", "time_window", "uuid", "max_length", "finite"} <= rules, rules
        assert {x.headers["error.class"] for x in letters} & {"TruncatedPayloadError", "SchemaMismatchError"}
        assert all(len(x.value) < 1_000_000 for x in letters)
        mangled_count = sum(1 for k, _, _ in mixed if k == b"mangled")
        print(f"\nfuzz: sent={len(sent)} (good {GOOD}, generated {FUZZED}, edge {len(edge_cases(producer_id))},"
              f" mangled {mangled_count}) dead-lettered={len(lettered)} stored ids={len(stored)};"
              f" good stored {good_latency_s:.1f} s after the last send")  # fmt: skip
        assert good_latency_s < 30
        health = httpx.get(f"http://127.0.0.1:{worker.port}/healthz", timeout=5)
        assert health.status_code == 200 and json.loads(health.text)["status"] == "ok", health.text
        assert worker.alive() and "ingest loop stopped" not in worker.log(), worker.log()[-3000:]
    finally:
        worker.stop()


def _stored_ids(settings: Settings, ids: list[str]) -> set[str]:
    canonical = [i for i in ids if _is_uuid(i)]
    rows = pg_fetchval(settings.postgres_dsn,
                       "SELECT coalesce(array_agg(event_id::text), '{}') FROM guardian_events"
                       " WHERE event_id = ANY($1::uuid[])", canonical)  # fmt: skip
    return set(rows)  # type: ignore[arg-type]


def _decoded_id(codec: EventCodec, value: bytes) -> str | None:
    try:
        return codec.decode(value)["event_id"]
    except CodecError:
        return None


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False
