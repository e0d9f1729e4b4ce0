"""What the management API says about one queue, as immutable values: ``QueueStats`` for the
scaling decision, ``Consumer`` for the choice of pods on scale-down.

Apart from ``management`` (the HTTP client) so that the values and the reading of the API's JSON
into them are pure: ``policy`` and ``deletion_cost`` use them without any I/O, and the replies'
shapes are tested as tables without a broker.

What RabbitMQ 3.10 reports, and how it is read here:

- A quorum queue's counts come from its leader's tick, every 5 s whatever
  ``collect_statistics_interval`` says; a new queue has none for its first 5-10 s. Missing counts
  are None (``queue_stats_from_json``): unknown, not zero.
- A rate is the difference of the last two samples, but the counters move in 5 s steps: asked
  plainly, a steady flow reads 0.0 four seconds in five. ``management`` asks for 5 s increments
  (``msg_rates_age``/``msg_rates_incr``) to get the rate over the last complete 5 s instead.
- A quorum queue's ``consumers`` also counts every ``basic.get`` not yet acked.
- Who consumes takes three replies: the queue's ``consumer_details`` name each consumer's channel
  and connection, but by address (``127.0.0.1:57780 -> ...``), not by the name the client gave;
  that (``user_provided_name``) is in the vhost's connections, and each channel's unacked count in
  its channels. A channel's count covers every queue it consumes from (a Warren worker consumes
  one queue per channel).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


class UnexpectedShape(ValueError):
    """A reply that is not shaped like the management API's."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One snapshot of the queue and the Deployment. A rate is None until it is known."""

    ready: int
    unacked: int
    consumers: int
    current_replicas: int
    publish_rate: float | None = None  # messages per second
    ack_rate: float | None = None  # messages per second, all consumers together

    def __post_init__(self) -> None:
        for name in ("ready", "unacked", "consumers", "current_replicas"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("publish_rate", "ack_rate"):
            rate = getattr(self, name)
            if rate is not None and not (math.isfinite(rate) and rate >= 0):
                raise ValueError(f"{name} must be a finite rate >= 0 or None, got {rate}")

    @property
    def backlog(self) -> int:
        return self.ready + self.unacked


@dataclass(frozen=True, slots=True)
class Consumer:
    """One channel consuming from the queue, as the management API reports it."""

    connection_name: str | None  # the client's ``connection_name``; None if it gave none
    peer_host: str | None  # the client's address as the broker sees it
    unacked: int  # messages delivered on the channel and not yet acknowledged


def queue_stats_from_json(payload: object, *, current_replicas: int) -> QueueStats | None:
    """The stats in a ``GET /api/queues/{vhost}/{name}?columns=...`` reply, None while its counts
    are missing (then RabbitMQ may even send ``[]``).

    ``UnexpectedShape`` (a ValueError) if the payload is not shaped like the API's reply. A
    missing, negative or non-finite rate is None: unknown.
    """
    if payload == []:  # ``columns`` selected nothing: an empty Erlang proplist is encoded as a list
        return None
    if not isinstance(payload, dict):
        raise UnexpectedShape(f"expected a JSON object, got {type(payload).__name__}")
    keys = ("messages_ready", "messages_unacknowledged", "consumers")
    if any(payload.get(key) is None for key in keys):
        return None
    ready, unacked, consumers = (_count(payload, key) for key in keys)
    message_stats = _mapping(payload, "message_stats")
    return QueueStats(ready=ready, unacked=unacked, consumers=consumers, current_replicas=current_replicas,
                      publish_rate=_rate(message_stats, "publish_details"),
                      ack_rate=_rate(message_stats, "ack_details"))


def consumers_from_json(queue: object, channels: object, connections: object) -> tuple[Consumer, ...]:
    """The queue's consumers from the three replies ``management.fetch_consumers`` reads: one per
    channel (a channel's unacked count is the channel's, however many consumers it has); unacked 0
    for a channel that closed between the reads. ``UnexpectedShape`` if a reply is not shaped like
    the API's."""
    if queue == []:  # ``columns`` selected nothing: no consumer_details at all
        return ()
    if not isinstance(queue, dict):
        raise UnexpectedShape(f"expected the queue's JSON object, got {type(queue).__name__}")
    details = queue.get("consumer_details") or []
    unacked = {str(c.get("name")): _count(c, "messages_unacknowledged") for c in _objects(channels, "channels")
               if c.get("messages_unacknowledged") is not None}  # a new channel's stats come within 5 s
    names = {str(c.get("name")): c.get("user_provided_name") for c in _objects(connections, "connections")}
    consumers: dict[str, Consumer] = {}
    for consumer in _objects(details, "consumer_details"):
        channel = _mapping(consumer, "channel_details")
        channel_name, connection = str(channel.get("name")), str(channel.get("connection_name"))
        peer_host, user_name = channel.get("peer_host"), names.get(connection)
        consumers[channel_name] = Consumer(
            connection_name=user_name if isinstance(user_name, str) else None,
            peer_host=peer_host if isinstance(peer_host, str) else None,
            unacked=unacked.get(channel_name, 0))
    return tuple(consumers.values())


def _objects(payload: object, what: str) -> list[Mapping[str, object]]:
    if not isinstance(payload, list) or not all(isinstance(item, dict) for item in payload):
        raise UnexpectedShape(f"{what} must be a list of objects")
    return payload


def _count(payload: Mapping[str, object], key: str) -> int:
    value = payload[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UnexpectedShape(f"{key} must be a count, got {value!r}")
    return value


def _mapping(payload: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = payload.get(key)
    if value is None or value == []:
        return {}
    if not isinstance(value, dict):
        raise UnexpectedShape(f"{key} must be an object, got {type(value).__name__}")
    return value


def _rate(message_stats: Mapping[str, object], key: str) -> float | None:
    rate = _mapping(message_stats, key).get("rate")
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise UnexpectedShape(f"message_stats.{key}.rate must be a number, got {rate!r}")
    return float(rate) if math.isfinite(rate) and rate >= 0 else None
