"""A Faust agent that does nothing but `take_events()`: the ceiling of Faust's per-message path here.

Run by the pipeline bench as `python -m bench.faust_null_agent TOPIC EVENTS RESULT_FILE`; it
writes the events/s it reached to RESULT_FILE and exits. This is the figure behind the
worker's design choice (stream_processors/batch_source.py).
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import faust

from guardian.kafka_config import faust_broker
from guardian.settings import get_settings
from guardian.stack.process import free_port


def main() -> None:
    topic_name, events, result_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    settings = get_settings()
    port = free_port()
    app = faust.App(
        f"bench-faust-null-{uuid.uuid4().hex[:8]}",
        **faust_broker(settings),
        value_serializer="raw",
        key_serializer="raw",
        web_port=port,
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
        stream_wait_empty=False,
        datadir=os.path.join(os.path.dirname(result_file), "faust-null"),
    )
    topic = app.topic(topic_name, value_serializer="raw", key_serializer="raw")
    state = {"seen": 0, "began": 0.0}

    @app.agent(topic)
    async def null_agent(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(2000, within=0.02):
            state["began"] = state["began"] or time.perf_counter()
            state["seen"] += len(batch)
            if state["seen"] >= events:
                with open(result_file, "w") as out:
                    out.write(str(round(state["seen"] / (time.perf_counter() - state["began"]))))
                os._exit(0)  # the figure is written; Faust's orderly shutdown would only add seconds

    sys.argv = ["faust-null-agent", "worker", "--loglevel", "warn", "--web-port", str(port)]
    app.main()


if __name__ == "__main__":
    main()
