"""`guardian bench producer | pipeline | recovery | consistency | api | peers | soak | faults | all`.

Tables, JSON in bench/results/. `all` leaves out peers, soak and faults (faults stops and kills the stack's
services, so it runs only when asked for)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from guardian.settings import get_settings

RESULTS = Path(__file__).resolve().parent / "results"
SOAK_CHART = Path(__file__).resolve().parent.parent / "docs" / "img" / "soak.svg"


# A broker in its first minutes runs its JIT's profiling code and compiles on the cores the benchmark
# measures; the benchmarks warm a broker this young first (bench/warmup.py).
FRESH_BROKER_S = 600
_warmed_pids: set[int] = set()


def _ensure_stack(warm: bool) -> dict:
    """Benchmarks need the real services; start the local stack if it is not running, and warm a young
    local broker unless told not to. Returns each local service's uptime in seconds (None: not the
    local stack's process) and the warm-up done, both stored with the result."""
    from bench.warmup import warm_broker
    from guardian.stack.health import probe_all
    from guardian.stack.manager import Stack

    settings = get_settings()
    stack = Stack(settings)
    if not all(p.healthy for p in probe_all(settings)):
        stack.up(report=lambda line: click.echo(f"stack: {line}"))
    uptimes = {name: service.process.uptime_s() for name, service in stack.services.items()}
    broker, pid = uptimes.get("kafka"), stack.services["kafka"].process.pid()
    warmup = None
    if broker is not None and broker < FRESH_BROKER_S and pid is not None and pid not in _warmed_pids:
        if warm:
            click.echo(f"the local Kafka broker started {broker:.0f} s ago: warming it up first (--no-warmup skips)")
            warmup = warm_broker(settings, pid, click.echo)
            _warmed_pids.add(pid)
        else:
            click.echo(
                f"note: the local Kafka broker started {broker:.0f} s ago and is not warmed up (--no-warmup):"
                " tail latencies are worse in its first minutes (docs/benchmarks.md)"
            )
    return {"stack_uptime_s": uptimes, "broker_warmup": warmup}


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"wrote {path}")
    return path


WARMUP_OPTION = click.option(
    "--warmup/--no-warmup",
    default=True,
    show_default=True,
    help=f"Warm a local broker younger than {FRESH_BROKER_S} s before measuring.",
)


@click.group()
def bench() -> None:
    """Benchmarks with a baseline measured in the same run."""


@bench.command()
@click.option("--events", type=int, default=100_000, show_default=True, help="Events per run.")
@click.option("--repeat", type=int, default=3, show_default=True, help="Runs per case; the median (by p99) is kept.")
@WARMUP_OPTION
def producer(events: int, repeat: int, warmup: bool) -> None:
    """emit() latency and throughput, broker up and down, against raw Producer.produce()."""
    from bench.producer import run_producer_bench

    stack = _ensure_stack(warmup)
    write_result("producer", {**run_producer_bench(get_settings(), events, repeat), **stack})


@bench.command()
@click.option("--events", type=int, default=100_000, show_default=True, help="Events for the throughput run.")
@click.option("--rate", type=int, default=5000, show_default=True, help="Events/s of the latency run.")
@WARMUP_OPTION
def pipeline(events: int, rate: int, warmup: bool) -> None:
    """End-to-end throughput into PostgreSQL + Redis and emit->Redis latency, against a plain consumer."""
    from bench.pipeline import run_pipeline_bench

    stack = _ensure_stack(warmup)
    write_result("pipeline", {**run_pipeline_bench(get_settings(), events, rate), **stack})


@bench.command()
@click.option("--events", type=int, default=1_000_000, show_default=True, help="Events in the topic to restore from.")
@click.option("--checkpoint-events", type=int, default=100_000, show_default=True,
              help="Events per run of the checkpoints on/off throughput comparison.")  # fmt: skip
@WARMUP_OPTION
def recovery(events: int, checkpoint_events: int, warmup: bool) -> None:
    """Host restore, hot view rebuild, worker kill -9 and checkpoint cost (bench/recovery.py)."""
    from bench.recovery import run_recovery_bench

    stack = _ensure_stack(warmup)
    write_result("recovery", {**run_recovery_bench(get_settings(), events, checkpoint_events), **stack})


@bench.command()
@click.option("--events", type=int, default=1_000_000, show_default=True, help="Events loaded, verified, replayed.")
@click.option("--rate", type=int, default=1000, show_default=True, help="Events/s of the live fleet during replays.")
@click.option("--seconds", type=float, default=30.0, show_default=True, help="Measured seconds of each live run.")
@WARMUP_OPTION
def consistency(events: int, rate: int, seconds: float, warmup: bool) -> None:
    """guardian verify's rate over N events, guardian replay beside a live fleet, the periodic verifier's cost."""
    from bench.consistency import run_consistency_bench

    stack = _ensure_stack(warmup)
    write_result("consistency", {**run_consistency_bench(get_settings(), events, rate, seconds), **stack})


@bench.command()
@click.option("--events", type=int, default=1_000_000, show_default=True, help="Events loaded before measuring.")
@click.option("--requests", type=int, default=1000, show_default=True, help="Requests per route.")
@WARMUP_OPTION
def api(events: int, requests: int, warmup: bool) -> None:
    """Query API latency per route, the dashboard's first paint and the live stream's delay, over N events."""
    from bench.api import run_api_bench

    stack = _ensure_stack(warmup)
    write_result("api", {**run_api_bench(get_settings(), events, requests), **stack})


PEERS = ("ours", "quix", "connect")


@bench.command()
@click.option("--events", type=int, default=100_000, show_default=True, help="Events each peer ingests.")
@click.option("--rate", type=int, default=5000, show_default=True,
              help="Events/s of the emit->Redis latency runs (ours, Quix); 0 skips them.")  # fmt: skip
@click.option("--seconds", type=float, default=15.0, show_default=True, help="Measured seconds of each latency run.")
@click.option("--repeat", type=int, default=2, show_default=True, help="Runs of every peer over the same topic.")
@click.option("--peer", "peers", multiple=True, type=click.Choice(PEERS), help="Only these peers (default: all).")
@WARMUP_OPTION
def peers(events: int, rate: int, seconds: float, repeat: int, peers: tuple[str, ...], warmup: bool) -> None:
    """Our worker against Quix Streams and Kafka Connect + Debezium's JDBC sink on the same events (bench/peers/)."""
    from bench.peers.run import run_peers_bench

    stack = _ensure_stack(warmup)
    write_result("peers", {**run_peers_bench(get_settings(), events, rate, seconds, repeat, peers or PEERS), **stack})


@bench.command()
@click.option("--minutes", type=float, default=30.0, show_default=True, help="Minutes measured, after a lead-in.")
@click.option("--rate", type=int, default=5000, show_default=True, help="Events/s.")
@click.option("--workers", type=int, default=2, show_default=True, help="guardian workers in the fleet.")
@click.option("--chart", type=click.Path(dir_okay=False, path_type=Path), default=SOAK_CHART, show_default=True,
              help="Where to write the RSS-over-time and p99-per-window chart (SVG).")  # fmt: skip
@WARMUP_OPTION
def soak(minutes: float, rate: int, workers: int, chart: Path, warmup: bool) -> None:
    """N minutes at the rate, alerts firing and resolving, verify every few minutes: RSS, p99, store sizes."""
    from bench.soak import run_soak_bench
    from bench.soak_chart import write_chart

    # a SIGTERM (timeout, a CI job cancelled) still drops the soak's database and topics and stops its workers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    stack = _ensure_stack(warmup)
    result = {**run_soak_bench(get_settings(), minutes, rate, workers), **stack}
    write_result("soak", result)
    write_chart(result, chart)
    click.echo(f"wrote {chart}")


@bench.command(name="all")
@click.pass_context
def run_all(ctx: click.Context) -> None:
    """Every benchmark in turn but peers, soak and faults (each run on its own: see the module docstring)."""
    ctx.invoke(producer)
    ctx.invoke(pipeline)
    ctx.invoke(recovery)
    ctx.invoke(consistency)
    ctx.invoke(api)


@bench.command()
@click.option("--quick", is_flag=True, help="Short faults (15 s outages, 3 worker kills 5 s apart).")
@click.option("--fault-seconds", type=float, default=None, help="Seconds of each outage (default 60, quick 15).")
@click.option("--rate", type=int, default=5000, show_default=True, help="Events/s of the producer.")
@click.option("--only", multiple=True, help="Only this fault (repeatable): " + ", ".join(
    ("worker_kill9_x10", "broker_stopped", "broker_kill9", "redis_restarted", "redis_flushall", "postgres_stopped",
     "producer_kill9_broker_down", "fuzzed_records", "spool_disk_full")))  # fmt: skip
def faults(quick: bool, fault_seconds: float | None, rate: int, only: tuple[str, ...]) -> None:
    """Each fault once at 5k events/s beside a producer and three workers: lost, duplicated, hot view, alerts,
    recovery time (bench/faults.py). Stops and kills the local stack's services: a stack of its own only."""
    from bench.faults import ROWS, run_faults_bench

    unknown = [name for name in only if name not in ROWS]
    if unknown:
        raise click.BadParameter(f"unknown fault(s) {unknown}; choose from {', '.join(ROWS)}", param_hint="--only")
    stack = _ensure_stack(warm=False)
    result = {**run_faults_bench(get_settings(), quick, fault_seconds, rate, only), **stack}
    earlier = RESULTS / "faults.json"
    if only and earlier.exists():  # a re-run of some rows replaces those rows of the last whole run
        whole = json.loads(earlier.read_text())
        rerun = {row["fault"]: {**row, "rerun": {k: result[k] for k in ("machine", "load_average_before", "plan")}}
                 for row in result["rows"]}  # fmt: skip
        whole["rows"] = [rerun.pop(row["fault"], row) for row in whole["rows"]] + list(rerun.values())
        result = whole
    write_result("faults", result)
