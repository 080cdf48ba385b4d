"""The Faust codec: registered by name, both framings decoded, typed errors for bad bytes."""

from __future__ import annotations

import pytest
from faust.serializers import codecs

import guardian.stream_processors.faust_codec  # registers the codec on import
from guardian.schemas.codec import EventCodec
from guardian.schemas.errors import BadMagicError
from tests.unit.test_codec import a_spike


def test_faust_round_trips_an_event_through_the_registered_codec():
    event = a_spike()
    data = codecs.dumps("guardian_avro", event)
    assert data[:2] == b"\xc3\x01"  # single-object framing without a registry
    assert codecs.loads("guardian_avro", data) == EventCodec().decode(data)


def test_confluent_framed_bytes_decode_too():
    registry = EventCodec(registry_url="mock://faust-codec-test")
    data = registry.encode(a_spike())
    assert data[0] == 0
    codec = guardian.stream_processors.faust_codec.GuardianAvroCodec(registry)
    assert codec.loads(data)["symbol"] == a_spike()["symbol"]


def test_bad_bytes_raise_the_codecs_typed_error():
    with pytest.raises(BadMagicError):
        codecs.loads("guardian_avro", b"\x07\x07\x07")
