"""A Faust codec for Guardian events, for anyone writing Faust agents on `guardian.events.v1`.

    import guardian.stream_processors.faust_codec  # registers "guardian_avro"
    topic = app.topic("guardian.events.v1", value_serializer="guardian_avro")

Decoding detects the framing from the first bytes (Avro single-object or Confluent);
encoding uses the configured one (Confluent when GUARDIAN_SCHEMA_REGISTRY_URL is set).
The worker's own hot path reads batches with confluent-kafka and decodes with the same
`EventCodec` (stream_processors/batch_source.py says why).
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from guardian.schemas.codec import EventCodec
from guardian.settings import get_settings

NAME = "guardian_avro"


class GuardianAvroCodec(codecs.Codec):
    def __init__(self, event_codec: EventCodec | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._codec = event_codec

    @property
    def codec(self) -> EventCodec:
        if self._codec is None:  # created on first use: importing must not contact a registry
            self._codec = EventCodec(registry_url=get_settings().schema_registry_url)
        return self._codec

    def _dumps(self, obj: Any) -> bytes:
        return self.codec.encode(obj)

    def _loads(self, data: bytes) -> Any:
        return self.codec.decode(data)


codecs.register(NAME, GuardianAvroCodec())
