"""The event model's names are the schema's."""

from __future__ import annotations

from guardian.schemas.codec import EventCodec
from guardian.schemas.events import Detector, Payload


def test_detectors_and_payload_types_match_the_avro_schema():
    schema = EventCodec().schema
    fields = {f["name"]: f["type"] for f in schema["fields"]}
    assert {d.value for d in Detector} == set(fields["detector"]["symbols"])
    assert {p.value for p in Payload} == {branch["name"] for branch in fields["payload"]}
