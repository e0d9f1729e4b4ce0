"""The values the management API's replies become (``warren_operator.stats``): what a snapshot
may hold, and the replies read as tables, every shape the API sends and none it does not."""

from __future__ import annotations

import math
from typing import Any

import pytest

from warren_operator.stats import Consumer, QueueStats, consumers_from_json, queue_stats_from_json


@pytest.mark.parametrize(
    "fields",
    [
        # a rate not yet known is None, never -1
        {"ack_rate": -1.0},
        {"publish_rate": -1.0},
        # rates must be numbers a decision can use
        {"ack_rate": math.nan},
        # counts cannot be negative
        {"ready": -1},
        {"current_replicas": -1},
    ],
)
def test_queue_stats_reject_impossible_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        QueueStats(**{"ready": 0, "unacked": 0, "consumers": 0, "current_replicas": 0, **fields})


@pytest.mark.parametrize(("payload", "expected"), [
    # a queue that has seen traffic
    ({"messages_ready": 5, "messages_unacknowledged": 2, "consumers": 1,
      "message_stats": {"publish_details": {"rate": 3.5}, "ack_details": {"rate": 2}}},
     QueueStats(ready=5, unacked=2, consumers=1, current_replicas=3, publish_rate=3.5, ack_rate=2.0)),
    # never any traffic: no message_stats, so no rates
    ({"messages_ready": 0, "messages_unacknowledged": 0, "consumers": 0},
     QueueStats(ready=0, unacked=0, consumers=0, current_replicas=3)),
    # published to, never acked: the broker may send an empty proplist as []
    ({"messages_ready": 1, "messages_unacknowledged": 0, "consumers": 0, "message_stats": []},
     QueueStats(ready=1, unacked=0, consumers=0, current_replicas=3)),
    # a negative rate (counters reset) is unknown, not an error
    ({"messages_ready": 0, "messages_unacknowledged": 0, "consumers": 0,
      "message_stats": {"ack_details": {"rate": -4.0}}},
     QueueStats(ready=0, unacked=0, consumers=0, current_replicas=3)),
    # a new quorum queue whose leader has not reported yet: unknown, not zero
    ({"consumers": 0}, None),
    ([], None),  # ``columns`` matched nothing
])
def test_queue_stats_from_json(payload: object, expected: QueueStats | None) -> None:
    assert queue_stats_from_json(payload, current_replicas=3) == expected


@pytest.mark.parametrize("payload", [
    ["a", "list"],
    {"messages_ready": "5", "messages_unacknowledged": 0, "consumers": 0},  # a string count
    {"messages_ready": True, "messages_unacknowledged": 0, "consumers": 0},  # JSON true is no count
    {"messages_ready": -1, "messages_unacknowledged": 0, "consumers": 0},
    {"messages_ready": 0, "messages_unacknowledged": 0, "consumers": 0, "message_stats": 7},
    {"messages_ready": 0, "messages_unacknowledged": 0, "consumers": 0,
     "message_stats": {"ack_details": {"rate": "fast"}}},
])
def test_queue_stats_from_json_rejects_other_shapes(payload: object) -> None:
    with pytest.raises(ValueError):
        queue_stats_from_json(payload, current_replicas=0)


def _channel(name: str, connection: str, peer_host: str = "10.1.0.7") -> dict[str, object]:
    return {"channel_details": {"name": name, "connection_name": connection, "peer_host": peer_host}}


@pytest.mark.parametrize(("queue", "channels", "connections", "expected"), [
    # one named connection whose channel holds 3
    ({"consumer_details": [_channel("c1 (1)", "c1")]},
     [{"name": "c1 (1)", "messages_unacknowledged": 3}], [{"name": "c1", "user_provided_name": "payments-a"}],
     (Consumer("payments-a", "10.1.0.7", 3),)),
    # two consumers on one channel: the channel's count, once
    ({"consumer_details": [_channel("c1 (1)", "c1"), _channel("c1 (1)", "c1")]},
     [{"name": "c1 (1)", "messages_unacknowledged": 3}], [{"name": "c1", "user_provided_name": "payments-a"}],
     (Consumer("payments-a", "10.1.0.7", 3),)),
    # a connection that gave no name; a channel whose stats have not come yet (or that closed) holds 0
    ({"consumer_details": [_channel("c2 (1)", "c2")]}, [{"name": "c2 (1)"}], [{"name": "c2"}],
     (Consumer(None, "10.1.0.7", 0),)),
    # no consumers: the key may be missing, or ``columns`` selected nothing at all
    ({"consumer_details": []}, [], [], ()),
    ({}, [], [], ()),
    ([], [], [], ()),
])
def test_consumers_from_json(queue: object, channels: object, connections: object,
                             expected: tuple[Consumer, ...]) -> None:
    assert consumers_from_json(queue, channels, connections) == expected


@pytest.mark.parametrize(("queue", "channels", "connections"), [
    ({"consumer_details": [_channel("c1 (1)", "c1")]}, {"not": "a list"}, []),
    ({"consumer_details": [_channel("c1 (1)", "c1")]}, [{"name": "c1 (1)", "messages_unacknowledged": "3"}], []),
    ({"consumer_details": ["not an object"]}, [], []),
    ("a string", [], []),
])
def test_consumers_from_json_rejects_other_shapes(queue: object, channels: object, connections: object) -> None:
    with pytest.raises(ValueError):
        consumers_from_json(queue, channels, connections)
