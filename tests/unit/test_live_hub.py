"""The live feed's pure parts: how a message goes on the wire, and a slow client is dropped, not buffered."""

from __future__ import annotations

import asyncio

from guardian.api.live import CLIENT_QUEUE, LiveHub, Message, Subscriber, decode_entry


def test_a_message_is_one_sse_event_with_its_stream_id():
    assert Message("breaker", {"symbol": "AAPL", "to": "OPEN"}, "17-0").encode() == (
        b'id: 17-0\nevent: breaker\ndata: {"symbol":"AAPL","to":"OPEN"}\n\n'
    )
    assert Message("metrics", {"x": 1}).encode() == b'event: metrics\ndata: {"x":1}\n\n'


def test_stream_entries_decode_and_unknown_types_are_skipped():
    fields = {b"type": b"breaker", b"symbol": b"AAPL", b"from": b"CLOSED", b"to": b"OPEN", b"event_time": b"5",
              b"event_id": b"e1"}  # fmt: skip
    message = decode_entry(b"9-1", fields)
    assert message is not None and message.kind == "breaker" and message.id == "9-1"
    assert message.data == {"symbol": "AAPL", "from": "CLOSED", "to": "OPEN", "event_time": 5, "event_id": "e1"}
    assert decode_entry(b"9-2", {b"type": b"from-a-newer-writer"}) is None


def test_a_client_that_falls_behind_is_dropped_and_told_to_reconnect():
    async def scenario() -> list:
        subscriber = Subscriber()
        for i in range(CLIENT_QUEUE + 5):
            subscriber.offer(Message("alert", {"i": i}, f"{i}-0"))
        assert subscriber.dropped
        drained = []
        while not subscriber.queue.empty():
            drained.append(subscriber.queue.get_nowait())
        return drained

    drained = asyncio.run(scenario())
    assert drained[-1] is None and len(drained) == CLIENT_QUEUE  # the last slot says "reconnect"


def test_the_newest_metrics_are_kept_for_clients_that_connect_later():
    hub = LiveHub(client=None)  # type: ignore[arg-type]  # publish() never touches Redis
    hub.publish(Message("metrics", {"n": 1}))
    hub.publish(Message("metrics", {"n": 2}))
    assert hub.latest_metrics is not None and hub.latest_metrics.data == {"n": 2}
