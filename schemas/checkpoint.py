"""The checkpoint topic (L3): its record format, and how checkpoints are written and read back.

Why Kafka, not a disk or PostgreSQL: a trading host's checkpoint must survive the loss of
the host's disk, and both the host library and the workers already speak Kafka, so a
restore needs no database and no other service. One record per checkpoint, Avro
(`schemas/avro/checkpoint.avsc`), keyed `<KIND>/<owner>/<slot>` with `slot` going round
0..keep-1: compaction keeps the newest record per key, so each owner keeps its last `keep`
checkpoints without any pruning job, and a corrupt newest one falls back to the one before.

A record is atomic (Kafka writes it whole or not at all), versioned (`format`) and
checksummed (SHA-256 of the body): `newest_valid()` skips what does not check out and says so.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from guardian.errors import GuardianError
from guardian.kafka_config import ErrorTrap, client_config
from guardian.kafka_ranges import consume_ranges
from guardian.logs import get_logger
from guardian.schemas.codec import EventCodec, load_checkpoint_schema
from guardian.settings import Settings

log = get_logger(__name__)

HOST = "HOST"
FLEET = "FLEET"
FORMAT = 1
METADATA_ROUND_S = 0.25
COMPRESS_ABOVE = 64 * 1024  # bodies bigger than this are zlib-compressed (the fleet's, typically)
MAX_RECORD_BYTES = 64 * 1024**2  # the topic's max.message.bytes: a fleet checkpoint of many symbols is large
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "max.message.bytes": str(MAX_RECORD_BYTES),
    # Compaction never touches the active segment: a short one keeps what a reader scans small.
    "segment.ms": str(10 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
}


class CorruptCheckpointError(GuardianError):
    """A checkpoint record that does not decode or whose body does not match its checksum."""


class CheckpointStoreError(GuardianError):
    """The checkpoint topic could not be written or read in time."""


@dataclass(frozen=True)
class Checkpoint:
    kind: str
    owner: str
    id: int
    created_at_us: int
    state: Any  # dict/list for JSON bodies, bytes for opaque ones
    offsets: dict[int, int] = field(default_factory=dict)
    size: int = 0  # bytes of the record as stored


_codec: EventCodec | None = None


def _checkpoint_codec() -> EventCodec:
    global _codec
    if _codec is None:
        _codec = EventCodec(load_checkpoint_schema())
    return _codec


def key_for(kind: str, owner: str, slot: int) -> bytes:
    return f"{kind}/{owner}/{slot}".encode()


def pack(
    kind: str,
    owner: str,
    state: Any,
    *,
    checkpoint_id: int,
    offsets: dict[int, int] | None = None,
    serialized: bool = False,
) -> bytes:
    """The record value of a checkpoint. `state` is bytes (returned as bytes by a restore), anything orjson
    can write, or, with `serialized`, bytes orjson already wrote (returned decoded)."""
    if serialized:
        body, encoding = bytes(state), "json"
    elif isinstance(state, bytes | bytearray | memoryview):
        body, encoding = bytes(state), "bytes"
    else:
        body, encoding = orjson.dumps(state), "json"
        if len(body) > COMPRESS_ABOVE:
            body, encoding = zlib.compress(body, 1), "zlib+json"
    record = {
        "kind": kind,
        "owner": owner,
        "id": checkpoint_id,
        "created_at": time.time_ns() // 1000,
        "format": FORMAT,
        "encoding": encoding,
        "offsets": {str(p): o for p, o in (offsets or {}).items()},
        "body": body,
        "sha256": hashlib.sha256(body).digest(),
    }
    return _checkpoint_codec().encode(record)


def unpack(value: bytes) -> Checkpoint:
    try:
        record = _checkpoint_codec().decode(value)
    except Exception as exc:  # CodecError and whatever a damaged record makes fastavro raise
        raise CorruptCheckpointError(f"does not decode: {exc}") from exc
    described = f"{record['kind']} checkpoint {record['id']} of {record['owner']}"
    if hashlib.sha256(record["body"]).digest() != record["sha256"]:
        raise CorruptCheckpointError(f"{described}: body does not match its SHA-256")
    if record["format"] != FORMAT:
        raise CorruptCheckpointError(f"{described}: format {record['format']}, this version reads {FORMAT}")
    body, encoding = record["body"], record["encoding"]
    try:
        if encoding == "bytes":
            state: Any = body
        elif encoding == "json":
            state = orjson.loads(body)
        elif encoding == "zlib+json":
            state = orjson.loads(zlib.decompress(body))
        else:
            raise ValueError(f"unknown encoding {encoding!r}")
    except (ValueError, zlib.error) as exc:
        raise CorruptCheckpointError(f"{described}: body unreadable: {exc}") from exc
    return Checkpoint(
        record["kind"], record["owner"], record["id"], record["created_at"], state,
        {int(p): o for p, o in record["offsets"].items()}, len(value),
    )  # fmt: skip


def newest_valid(records: Iterable[tuple[bytes, bytes]], kind: str, owner: str) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint of `owner` that checks out, from (key, value) records in log order, and what
    was skipped on the way (newer corrupt ones), one line each."""
    prefix = f"{kind}/{owner}/".encode()
    latest_per_key: dict[bytes, bytes] = {}
    for key, value in records:  # what compaction would keep: the last record per key
        if key.startswith(prefix):
            if value:
                latest_per_key[key] = value
            else:  # a tombstone: the owner's checkpoints were forgotten (forget())
                latest_per_key.pop(key, None)
    good: list[Checkpoint] = []
    corrupt: list[tuple[int, str]] = []  # (id if known, why)
    for key, value in latest_per_key.items():
        try:
            good.append(unpack(value))
        except CorruptCheckpointError as exc:
            corrupt.append((_id_of(value), f"{key.decode(errors='replace')}: {exc}"))
    chosen = max(good, key=lambda c: c.id, default=None)
    floor = chosen.id if chosen else -1
    problems = [why for checkpoint_id, why in corrupt if checkpoint_id > floor or checkpoint_id < 0]
    return chosen, problems


def _id_of(value: bytes) -> int:
    """The id of a checkpoint whose body is bad but whose envelope decodes; -1 if nothing does."""
    try:
        return int(_checkpoint_codec().decode(value)["id"])
    except Exception:
        return -1


class CheckpointStore:
    """Writes and reads the checkpoint topic with short-lived clients (checkpoints are rare)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.checkpoints_topic
        self.keep = settings.checkpoints_kept
        self._producer: Any = None

    def producer_config(self) -> dict:
        return client_config(
            self.settings,
            {"acks": "all", "enable.idempotence": True, "message.max.bytes": MAX_RECORD_BYTES, "linger.ms": 0},
        )

    def write(self, key: bytes, value: bytes | None, timeout: float = 10.0) -> None:
        """Write one checkpoint (None: a tombstone) and wait until Kafka has it. The producer is kept for
        the next one: a new one per checkpoint spent ~0.5 s connecting and getting an idempotent producer id."""
        from confluent_kafka import Producer

        if self._producer is None:
            self._producer = Producer({**self.producer_config(), "message.timeout.ms": int(timeout * 1000)})
        producer = self._producer
        failures: list[str] = []
        producer.produce(self.topic, value, key, on_delivery=lambda err, _msg: err and failures.append(str(err)))
        left = producer.flush(timeout)
        if left or failures:
            why = failures[0] if failures else "timed out"
            raise CheckpointStoreError(f"checkpoint not written to {self.topic}: {why}")

    def _consumer(self, trap: _Codes) -> Any:
        from confluent_kafka import Consumer

        config = {"group.id": "guardian-checkpoint-reader", "enable.auto.commit": False, "log_level": 0,
                  "error_cb": trap}  # fmt: skip
        return Consumer(client_config(self.settings, config))

    def records(self, timeout: float = 10.0) -> list[tuple[bytes, bytes]]:
        """Every record of the topic as (key, value), in log order, read up to where it ended when asked."""
        deadline = time.monotonic() + timeout
        trap = _Codes()
        consumer = self._consumer(trap)
        try:
            return self._read(consumer, self._ends(consumer, deadline, trap), None, deadline)
        finally:
            consumer.close()

    def _ends(self, consumer: Any, deadline: float, trap: _Codes) -> dict[int, tuple[int, int]]:
        """partition -> (low, high) watermarks of the partitions that hold records."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            topic = _metadata(consumer, self.topic, deadline, trap).topics.get(self.topic)
            if topic is None or topic.error is not None or not topic.partitions:
                raise CheckpointStoreError(f"no topic {self.topic} (run `guardian stack init`)")
            ends = {}
            for partition in topic.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=max(0.1, deadline - time.monotonic())
                )
                if high > low:
                    ends[partition] = (low, high)
            return ends
        except KafkaException as exc:
            raise CheckpointStoreError(f"{self.topic} unreadable: {exc}") from exc

    def _read(self, consumer: Any, ends: dict[int, tuple[int, int]], last: int | None, deadline: float) -> list:
        """(key, value) of the last `last` offsets of each partition (None: all), in log order per partition."""
        from confluent_kafka import KafkaException

        ranges = {p: (low if last is None else max(low, high - last), high) for p, (low, high) in ends.items()}
        try:
            return [
                (message.key() or b"", message.value() or b"")
                for messages in consume_ranges(consumer, self.topic, ranges, deadline=deadline, batch=1000)
                for message in messages
            ]
        except TimeoutError as exc:
            raise CheckpointStoreError(f"reading {self.topic} took too long") from exc
        except KafkaException as exc:
            raise CheckpointStoreError(f"{self.topic} unreadable: {exc}") from exc
        finally:
            consumer.unassign()

    def forget(self, kind: str, owner: str, timeout: float = 30.0) -> list[bytes]:
        """Tombstone every checkpoint key of `owner` (a worker group or producer that is gone): compaction
        then drops them. Returns the keys."""
        prefix = f"{kind}/{owner}/".encode()
        keys = sorted({key for key, value in self.records(timeout) if key.startswith(prefix) and value})
        for key in keys:
            self.write(key, None, timeout)
        return keys

    def latest_with_problems(self, kind: str, owner: str, timeout: float = 10.0) -> tuple[Checkpoint | None, list[str]]:
        """The newest valid checkpoint of `owner`, and the corrupt newer ones skipped (one line each).

        Read from the end: the newest records are the last ones, so the last `keep` offsets are read
        first, and four times as many each round while none of them is a valid checkpoint of `owner`
        (a corrupt one, or other owners' records in between), up to the whole topic."""
        deadline = time.monotonic() + timeout
        trap = _Codes()
        consumer = self._consumer(trap)
        try:
            ends = self._ends(consumer, deadline, trap)
            window = self.keep
            while True:
                chosen, problems = newest_valid(self._read(consumer, ends, window, deadline), kind, owner)
                everything = all(high - low <= window for low, high in ends.values())
                if chosen is not None or everything:
                    return chosen, problems
                window *= 4
        finally:
            consumer.close()

    def latest(self, kind: str, owner: str, timeout: float = 10.0) -> Checkpoint | None:
        """The newest valid checkpoint of `owner`; corrupt newer ones are logged and skipped."""
        chosen, problems = self.latest_with_problems(kind, owner, timeout)
        for problem in problems:
            log.warning("corrupt checkpoint skipped", problem=problem,
                        using=chosen.id if chosen else "none (full replay)")  # fmt: skip
        return chosen


class _Codes(ErrorTrap):
    """An ErrorTrap that also keeps every error code librdkafka reported."""

    def __init__(self) -> None:
        super().__init__()
        self.codes: set[int] = set()

    def __call__(self, error: Any) -> None:
        super().__call__(error)
        self.codes.add(error.code())


def _metadata(client: Any, topic: str, deadline: float, trap: _Codes) -> Any:
    """The topic's metadata, asked in short rounds: a Kafka that refuses connections or logins ends the
    wait at once (a restore has other sources to try) instead of at the deadline."""
    from confluent_kafka import KafkaError, KafkaException

    while True:
        try:
            return client.list_topics(topic, timeout=max(0.05, min(METADATA_ROUND_S, deadline - time.monotonic())))
        except KafkaException as exc:
            client.poll(0)  # serves error_cb
            hopeless = (KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTHENTICATION, KafkaError._RESOLVE)
            if trap.codes.intersection(hopeless) or time.monotonic() >= deadline:
                raise CheckpointStoreError(f"kafka unreachable: {trap.reason(client, exc)}") from exc
