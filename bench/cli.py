"""`guardian bench producer | pipeline | all`: print a table, write bench/results/<name>.json."""

from __future__ import annotations

import json
from pathlib import Path

import click

from guardian.settings import get_settings

RESULTS = Path(__file__).resolve().parent / "results"


# A broker in its first minutes runs its JIT's profiling code and compiles on the cores the benchmark
# measures; tails are worse then (README, Benchmarks).
FRESH_BROKER_S = 600


def _ensure_stack() -> dict[str, float | None]:
    """Benchmarks need the real services; start the local stack if it is not running. Returns each
    local service's uptime in seconds (None: not the local stack's process), stored with the result."""
    from guardian.stack.health import probe_all
    from guardian.stack.manager import Stack

    settings = get_settings()
    stack = Stack(settings)
    if not all(p.healthy for p in probe_all(settings)):
        stack.up(report=lambda line: click.echo(f"stack: {line}"))
    uptimes = {name: service.process.uptime_s() for name, service in stack.services.items()}
    broker = uptimes.get("kafka")
    if broker is not None and broker < FRESH_BROKER_S:
        click.echo(
            f"note: the local Kafka broker started {broker:.0f} s ago; in its first ~{FRESH_BROKER_S // 60} minutes"
            " tail latencies are worse (README, Benchmarks): compare runs of a broker that has been up longer"
        )
    return uptimes


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"wrote {path}")
    return path


@click.group()
def bench() -> None:
    """Benchmarks with a baseline measured in the same run."""


@bench.command()
@click.option("--events", type=int, default=100_000, show_default=True, help="Events per run.")
@click.option("--repeat", type=int, default=3, show_default=True, help="Runs per case; the median (by p99) is kept.")
def producer(events: int, repeat: int) -> None:
    """emit() latency and throughput, broker up and down, against raw Producer.produce()."""
    from bench.producer import run_producer_bench

    uptimes = _ensure_stack()
    write_result("producer", {**run_producer_bench(get_settings(), events, repeat), "stack_uptime_s": uptimes})


@bench.command()
@click.option("--events", type=int, default=100_000, show_default=True, help="Events for the throughput run.")
@click.option("--rate", type=int, default=5000, show_default=True, help="Events/s of the latency run.")
def pipeline(events: int, rate: int) -> None:
    """End-to-end throughput into PostgreSQL + Redis and emit->Redis latency, against a plain consumer."""
    from bench.pipeline import run_pipeline_bench

    uptimes = _ensure_stack()
    write_result("pipeline", {**run_pipeline_bench(get_settings(), events, rate), "stack_uptime_s": uptimes})


@bench.command(name="all")
@click.pass_context
def run_all(ctx: click.Context) -> None:
    """Every benchmark in turn."""
    ctx.invoke(producer)
    ctx.invoke(pipeline)
