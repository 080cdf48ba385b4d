"""The Avro codec: round trips, interoperability with code we did not write, and clear errors."""

from __future__ import annotations

import json

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

from guardian.schemas.codec import SCHEMA_DIR, EventCodec, load_event_schema, schema_fingerprint
from guardian.schemas.errors import BadMagicError, SchemaMismatchError, TruncatedPayloadError, UnknownSchemaError

LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT = st.integers(min_value=-(2**31), max_value=2**31 - 1)
DOUBLE = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(max_size=20)

PAYLOADS = st.one_of(
    st.fixed_dictionaries(
        {
            "observed_latency_us": LONG, "threshold_us": LONG, "p50_us": LONG, "p99_us": LONG, "p999_us": LONG,
            "window_seconds": INT, "z_score": DOUBLE, "order_path": TEXT, "venue": TEXT,
        }
    ).map(lambda p: ("io.guardian.events.LatencySpike", p)),
    st.fixed_dictionaries(
        {"metric": TEXT, "expected": DOUBLE, "observed": DOUBLE, "drift_score": DOUBLE, "window_seconds": INT}
    ).map(lambda p: ("io.guardian.events.Drift", p)),
    st.fixed_dictionaries(
        {
            "from_state": st.sampled_from(["CLOSED", "OPEN", "HALF_OPEN"]),
            "to_state": st.sampled_from(["CLOSED", "OPEN", "HALF_OPEN"]),
            "reason": TEXT, "trip_count": INT, "cooldown_seconds": INT,
        }
    ).map(lambda p: ("io.guardian.events.CircuitBreakerTransition", p)),
)  # fmt: skip
EVENTS = st.fixed_dictionaries(
    {
        "event_id": st.uuids().map(str),
        "producer_id": TEXT,
        "sequence": LONG,
        "host": TEXT,
        "symbol": TEXT,
        "detector": st.sampled_from(["LATENCY_SPIKE_DETECTOR", "DRIFT_MONITOR", "CIRCUIT_BREAKER"]),
        "event_time": st.integers(min_value=0, max_value=2**62),
        "severity": st.sampled_from(["INFO", "WARNING", "CRITICAL"]),
        "schema_version": INT,
        "payload": PAYLOADS,
    }
)

SINGLE_OBJECT = EventCodec()
CONFLUENT = EventCodec(registry_url="mock://round-trip")


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_any_valid_event_round_trips_in_both_framings(event):
    for codec in (SINGLE_OBJECT, CONFLUENT):
        assert codec.decode(codec.encode(event)) == event


def a_spike(**overrides) -> dict:
    event = {
        "event_id": "6f0e3b9a-2b4c-4c1e-9d55-0e7c9a1f2b3c", "producer_id": "host-1", "sequence": 7, "host": "host",
        "symbol": "AAPL", "detector": "LATENCY_SPIKE_DETECTOR", "event_time": 1_700_000_000_000_000,
        "severity": "WARNING", "schema_version": 1,
        "payload": ("io.guardian.events.LatencySpike", {
            "observed_latency_us": 9000, "threshold_us": 1000, "p50_us": 300, "p99_us": 800, "p999_us": 1500,
            "window_seconds": 60, "z_score": 4.2, "order_path": "new_order", "venue": "XNAS",
        }),
    }  # fmt: skip
    event.update(overrides)
    return event


def test_single_object_fingerprint_is_the_specs_crc64_avro():
    # The Avro specification's reference algorithm, written out independently of fastavro. (The
    # reference `avro` Python package is no oracle here: its canonical form keeps
    # {"type":"string"} for logical-typed primitives, which the spec's [PRIMITIVES] rule collapses.)
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)

    def crc64_avro(data: bytes) -> int:
        fp = empty
        for byte in data:
            fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
        return fp

    canonical = to_parsing_canonical_form(load_event_schema()).encode()
    expected = crc64_avro(canonical).to_bytes(8, "little")
    assert schema_fingerprint(load_event_schema()) == expected
    assert SINGLE_OBJECT.encode(a_spike())[:10] == b"\xc3\x01" + expected


def test_confluent_framing_interoperates_with_confluents_own_serde():
    client = SchemaRegistryClient.new_client({"url": "mock://interop"})
    ours = EventCodec(registry_client=client)
    schema_str = (SCHEMA_DIR / "guardian_event.avsc").read_text()
    context = SerializationContext("guardian.events.v1", MessageField.VALUE)

    # ours -> Confluent's deserializer
    theirs = AvroDeserializer(client, schema_str)
    decoded = theirs(ours.encode(a_spike()), context)
    assert decoded["symbol"] == "AAPL" and decoded["sequence"] == 7
    assert decoded["payload"]["observed_latency_us"] == 9000
    assert int(decoded["event_time"].timestamp() * 1_000_000) == a_spike()["event_time"]

    # Confluent's serializer -> ours
    serializer = AvroSerializer(client, schema_str, conf={"auto.register.schemas": True})
    event = a_spike()
    event["payload"] = event["payload"][1]  # their serializer takes plain dicts for union branches
    data = serializer(event, context)
    assert data[0] == 0  # Confluent wire format
    assert ours.decode(data) == a_spike()


def test_bad_magic_names_the_bytes():
    with pytest.raises(BadMagicError, match="0700"):
        SINGLE_OBJECT.decode(b"\x07\x00junk")


@pytest.mark.parametrize("data", [b"\xc3", b"\xc3\x01\x00\x01", b"\x00\x00\x01"])
def test_truncated_headers(data):
    with pytest.raises(TruncatedPayloadError):
        SINGLE_OBJECT.decode(data)


def test_truncated_body():
    data = SINGLE_OBJECT.encode(a_spike())
    with pytest.raises(TruncatedPayloadError):
        SINGLE_OBJECT.decode(data[:-5])


def test_unknown_fingerprint_is_named_in_hex():
    with pytest.raises(UnknownSchemaError, match="0102030405060708"):
        SINGLE_OBJECT.decode(b"\xc3\x01\x01\x02\x03\x04\x05\x06\x07\x08rest")


def test_confluent_id_without_a_registry():
    with pytest.raises(UnknownSchemaError, match="schema id 42"):
        SINGLE_OBJECT.decode(b"\x00\x00\x00\x00\x2a\x02")


def test_trailing_garbage_is_a_mismatch():
    with pytest.raises(SchemaMismatchError, match="bytes left"):
        SINGLE_OBJECT.decode(SINGLE_OBJECT.encode(a_spike()) + b"\x00\x00")


def test_encode_names_the_field_that_does_not_match():
    event = a_spike()
    event["payload"][1]["z_score"] = "high"
    with pytest.raises(SchemaMismatchError, match="z_score"):
        SINGLE_OBJECT.encode(event)
    with pytest.raises(SchemaMismatchError, match="sequence"):
        SINGLE_OBJECT.encode(a_spike(sequence="seven"))


def test_encode_accepts_datetime_and_uuid_objects():
    import uuid
    from datetime import UTC, datetime

    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    ident = uuid.uuid4()
    decoded = SINGLE_OBJECT.decode(SINGLE_OBJECT.encode(a_spike(event_time=when, event_id=ident)))
    assert decoded["event_time"] == int(when.timestamp()) * 1_000_000 + 678901
    assert decoded["event_id"] == str(ident)


def test_v1_bytes_decode_with_a_v2_reader_that_added_a_field():
    v2 = json.loads((SCHEMA_DIR / "guardian_event.avsc").read_text())
    v2["fields"].append({"name": "desk", "type": "string", "default": "unknown", "doc": "Trading desk."})
    reader = EventCodec(schema=fastavro.parse_schema(v2))
    decoded = reader.decode(SINGLE_OBJECT.encode(a_spike()))  # written by v1, known by its fingerprint
    assert decoded["desk"] == "unknown"
    assert decoded["symbol"] == "AAPL"


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_the_fast_encoder_writes_exactly_what_fastavros_public_writer_does(event):
    import io

    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, load_event_schema(), event)
    assert SINGLE_OBJECT.encode(event)[10:] == buffer.getvalue()


@pytest.mark.parametrize("n", [0, 1, -1, 63, 64, -65, 8191, 8192, 2**31 - 1, -(2**31), 2**49, 2**56 - 1, 2**56,
                               2**62, 2**63 - 1, -(2**63), 1_795_000_000_000_000])  # fmt: skip
def test_the_fast_writers_varint_is_avros(n):
    import io

    from guardian.schemas.fast_writer import varint

    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, "long", n)
    assert varint(n) == buffer.getvalue()


def test_values_the_fast_writer_refuses_fall_back_to_fastavro_and_its_errors():
    from guardian.schemas.codec import load_alert_schema

    assert EventCodec(load_alert_schema())._envelope is None  # maps and nullable fields: fastavro only
    with pytest.raises(SchemaMismatchError, match="sequence"):
        SINGLE_OBJECT.encode(a_spike(sequence=2**63))  # out of range for a long
