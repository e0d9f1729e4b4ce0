"""A paced raw pika publisher with confirms, for ``bench.latency``.

``_pika_publisher``'s pipeline (SelectConnection, asynchronous confirms, mandatory), but each
message goes out at its slot of a fixed schedule, ``start + i / rate``, not as fast as the window
allows: an open-loop load, so a slow consumer does not slow the arrivals and hide its own latency.
The timestamp of message ``i`` is ``time.monotonic()`` taken just before its ``basic_publish``;
its confirm time is taken when the broker's ack (possibly ``multiple``) covering it arrives.

pika's I/O loop sleeps in ``epoll``, whose timeout is whole milliseconds: above 1,000 msg/s the
messages due within one millisecond go out together (at 2,000 msg/s, in pairs).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika

from bench._pika_publisher import _Pipeline, run_pipeline


@dataclass(frozen=True)
class Prepared:
    message_id: str
    body: bytes
    properties: pika.BasicProperties


@dataclass(frozen=True)
class Published:
    """Per message, in publish order: when it was published and confirmed, and how late its
    publish was against the schedule (all ``time.monotonic()`` seconds)."""

    message_ids: list[str]
    published_at: list[float]
    confirmed_at: list[float]
    lag: list[float]


class _Paced(_Pipeline):
    def __init__(self, exchange: str, routing_key: str, messages: Sequence[Prepared], rate: float) -> None:
        super().__init__(exchange, routing_key, [m.message_id for m in messages], window=len(messages))
        self.messages = messages
        self.interval = 1.0 / rate
        self.started_at = 0.0
        self.published_at = [0.0] * len(messages)
        self.confirmed_at = [0.0] * len(messages)
        self.lag = [0.0] * len(messages)

    def on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_return_callback(self.on_return)
        channel.add_on_close_callback(self.on_channel_closed)
        channel.confirm_delivery(self.on_confirm, callback=lambda _frame: self._begin())

    def _begin(self) -> None:
        self.started_at = time.monotonic()
        self._tick()

    def _tick(self) -> None:
        self.pump()
        if self.published < len(self.messages) and self.error is None and self.connection is not None:
            due = self.started_at + self.published * self.interval
            self.connection.ioloop.call_later(max(0.0, due - time.monotonic()), self._tick)

    def pump(self) -> None:
        """Publish every message whose slot has come (called by the timer and after confirms)."""
        while self.published < len(self.messages):
            i = self.published
            due = self.started_at + i * self.interval
            if due > time.monotonic():
                return
            message = self.messages[i]
            self.published_at[i] = now = time.monotonic()
            self.channel.basic_publish(self.exchange, self.routing_key, message.body, message.properties,
                                       mandatory=True)
            self.lag[i] = now - due
            self.published += 1
            self.pending.append(self.published)

    def _settle(self, tag: int, multiple: bool) -> int:
        now = time.monotonic()
        if multiple:
            for pending in self.pending:  # ascending
                if pending > tag:
                    break
                self.confirmed_at[pending - 1] = now
        else:
            self.confirmed_at[tag - 1] = now
        return super()._settle(tag, multiple)


def publish_paced(
    url: str, exchange: str, routing_key: str, messages: Sequence[Prepared], *, rate: float, timeout: float = 300.0
) -> Published:
    """Publish ``messages`` at ``rate`` per second; return once every one is confirmed; raise on
    any refusal (nack or return)."""
    pipeline = _Paced(exchange, routing_key, messages, rate)
    run_pipeline(url, pipeline, timeout=timeout, what="paced publish", total=len(messages))
    return Published(list(pipeline.message_ids), pipeline.published_at, pipeline.confirmed_at, pipeline.lag)
