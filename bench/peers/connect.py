"""The Kafka Connect peer: a standalone Connect worker running Debezium's JDBC sink into PostgreSQL.

Both come from Maven Central the way `guardian stack up` gets Kafka (guardian/stack/kafka_service.py):
Maven copies the jars (bench/peers/connect/*.xml) into the stack's cache once, and the worker runs as
`java -cp <connect libs>/* org.apache.kafka.connect.cli.ConnectStandalone worker.properties sink.properties`
with the connector in a plugin directory of its own.

Connect's converters need schema'd records. Confluent's Avro converter is not on Maven Central (and
would need a schema registry), so the connector reads a JSON-with-schema copy of the same events
(JsonConverter, schemas.enable=true), written to a topic of its own before any timing. The fields use
Debezium's semantic types (ZonedTimestamp, Uuid, Json) so the sink binds them as timestamptz, uuid and
JSON, into a table shaped like guardian_events: the same columns, primary key and indexes.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import click
import orjson
from confluent_kafka import Consumer, Producer

from guardian.kafka_config import client_config
from guardian.schemas.codec import EventCodec
from guardian.settings import REPO_ROOT, Settings
from guardian.sinks.postgres import micros_to_datetime
from guardian.stack.process import free_port
from guardian.stack.system import java_binary, maven_binary

HERE = Path(__file__).resolve().parent / "connect"
CONNECTOR = "io.debezium.connector.jdbc.JdbcSinkConnector"

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
logger.connect.name = org.apache.kafka.connect.runtime.WorkerSinkTask
logger.connect.level = info
"""


def _field(name: str, kind: str, semantic: str | None = None) -> dict:
    field = {"field": name, "type": kind, "optional": False}
    if semantic:
        field["name"] = semantic
    return field


# A row of guardian_events (sinks/postgres.py COLUMNS) in Connect's JSON schema form.
SCHEMA = {
    "type": "struct",
    "name": "guardian.bench.Event",
    "optional": False,
    "fields": [
        _field("event_time", "string", "io.debezium.time.ZonedTimestamp"),
        _field("event_id", "string", "io.debezium.data.Uuid"),
        _field("producer_id", "string"),
        _field("sequence", "int64"),
        _field("host", "string"),
        _field("symbol", "string"),
        _field("detector", "string"),
        _field("severity", "string"),
        _field("schema_version", "int32"),
        _field("payload_type", "string"),
        _field("payload", "string", "io.debezium.data.Json"),
        _field("kafka_partition", "int32"),
        _field("kafka_offset", "int64"),
    ],
}
_SCHEMA_JSON = orjson.dumps(SCHEMA)


def _versions() -> dict:
    kafka = re.search(r"<kafka.version>([^<]+)<", (REPO_ROOT / "deploy" / "local" / "pom.xml").read_text())
    plugin = (HERE / "plugin-pom.xml").read_text()
    return {
        "kafka_connect": kafka.group(1) if kafka else "unknown",
        "debezium_connector_jdbc": re.search(r"<debezium.version>([^<]+)<", plugin).group(1),
        "postgresql_jdbc": re.search(r"<postgresql.version>([^<]+)<", plugin).group(1),
    }


def _copy_dependencies(pom: Path, out: Path, extra: list[str]) -> bool:
    done = out / ".complete"
    if done.exists():
        return False
    result = subprocess.run(
        [maven_binary(), "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={out}",
         "-DincludeScope=runtime", *extra],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise click.ClickException(f"Maven could not fetch {pom.name}'s jars (exit {result.returncode}):\n{tail}")
    done.write_text("ok")
    return True


def fetch(settings: Settings) -> tuple[Path, Path, dict]:
    """(Connect's libs, the plugin path, versions), fetched into the stack's cache on first use."""
    versions = _versions()
    cache = settings.stack_dir.resolve() / "cache"
    libs = cache / f"connect-{versions['kafka_connect']}" / "libs"
    plugins = cache / f"debezium-jdbc-{versions['debezium_connector_jdbc']}"
    if _copy_dependencies(HERE / "runtime-pom.xml", libs, [f"-Dkafka.version={versions['kafka_connect']}"]):
        click.echo(f"  fetched Kafka Connect {versions['kafka_connect']} into {libs}")
    # The runtime provides Kafka's own classes, SLF4J and Jackson: left out of the plugin directory (a second
    # jackson-databind in the plugin's class loader makes the runtime's Jdk8Module "not a subtype" of its Module).
    exclude = ["-DexcludeGroupIds=org.apache.kafka,com.fasterxml.jackson.core", "-DexcludeArtifactIds=slf4j-api"]
    if _copy_dependencies(HERE / "plugin-pom.xml", plugins / "debezium-jdbc", exclude):
        click.echo(f"  fetched Debezium's JDBC sink {versions['debezium_connector_jdbc']} into {plugins}")
    return libs, plugins, versions


def write_json_copy(settings: Settings, source: str, target: str, events: int) -> dict:
    """Read `events` Avro events of `source` and produce each as a JSON-with-schema row to `target`
    (same partition, key). Returns the copy's size."""
    codec = EventCodec()
    consumer = Consumer(client_config(settings, {"group.id": f"{target}-copier", "auto.offset.reset": "earliest",
                                                 "enable.auto.commit": False}))  # fmt: skip
    producer = Producer(client_config(settings, {"linger.ms": 20, "compression.type": "lz4"}))
    consumer.subscribe([source])
    copied, size = 0, 0
    deadline = time.monotonic() + 300
    while copied < events and time.monotonic() < deadline:
        for message in consumer.consume(5000, timeout=0.5):
            if message.error() is not None:
                continue
            event = codec.decode(message.value())
            payload_name, payload = event["payload"]
            row = {
                "event_time": micros_to_datetime(event["event_time"]).isoformat(),
                "event_id": event["event_id"],
                "producer_id": event["producer_id"],
                "sequence": event["sequence"],
                "host": event["host"],
                "symbol": event["symbol"],
                "detector": event["detector"],
                "severity": event["severity"],
                "schema_version": event["schema_version"],
                "payload_type": payload_name.rsplit(".", 1)[-1],
                "payload": orjson.dumps(payload).decode(),
                "kafka_partition": message.partition(),
                "kafka_offset": message.offset(),
            }
            value = b'{"schema":' + _SCHEMA_JSON + b',"payload":' + orjson.dumps(row) + b"}"
            while True:
                try:
                    producer.produce(target, value, key=message.key(), partition=message.partition())
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            copied += 1
            size += len(value)
    consumer.close()
    producer.flush(120)
    return {"json_copy_events": copied, "json_copy_bytes_per_event": round(size / max(copied, 1))}


def start(settings: Settings, libs: Path, plugins: Path, topic: str, table: str, workdir: Path,
          connector_overrides: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:  # fmt: skip
    """Start a standalone Connect worker with the JDBC sink on `topic` -> `table`; (process, consumer group)."""
    name = f"bench-jdbc-{uuid.uuid4().hex[:6]}"
    dsn = urlsplit(settings.postgres_admin_dsn)
    worker = workdir / "connect-worker.properties"
    worker.write_text(
        "\n".join([
            f"bootstrap.servers={settings.kafka_bootstrap}",
            "key.converter=org.apache.kafka.connect.storage.StringConverter",
            "value.converter=org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable=true",
            f"offset.storage.file.filename={workdir / 'connect.offsets'}",
            "offset.flush.interval.ms=1000",
            f"plugin.path={plugins}",
            # Every plugin here has ServiceLoader manifests; scanning the classes took ~50 s on this host.
            "plugin.discovery=service_load",
            f"listeners=http://127.0.0.1:{free_port()}",
            "",
        ])
    )  # fmt: skip
    connector = {
        "name": name,
        "connector.class": CONNECTOR,
        "tasks.max": "1",
        "topics": topic,
        "connection.url": f"jdbc:postgresql://{dsn.hostname}:{dsn.port}{dsn.path}",
        "connection.username": dsn.username or "",
        "connection.password": dsn.password or "",
        "insert.mode": "upsert",
        "primary.key.mode": "record_value",
        "primary.key.fields": "event_time,event_id",
        "schema.evolution": "none",
        "collection.name.format": table,
        **connector_overrides,
    }
    sink = workdir / "connect-sink.properties"
    sink.write_text("\n".join(f"{key}={value}" for key, value in connector.items()) + "\n")
    (workdir / "connect-log4j2.properties").write_text(LOG4J2)
    log = open(workdir / "connect.log", "wb")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [java_binary(), "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
         # e.g. -XX:StartFlightRecording=filename=connect.jfr to see where the connector's time goes
         *os.environ.get("GUARDIAN_BENCH_CONNECT_JAVA_OPTS", "").split(),
         f"-Dlog4j2.configurationFile={workdir / 'connect-log4j2.properties'}",
         "-cp", f"{libs}/*", "org.apache.kafka.connect.cli.ConnectStandalone", str(worker), str(sink)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return process, f"connect-{name}"
