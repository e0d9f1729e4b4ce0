"""Raw pika pipelined publisher confirms, the baseline for Warren's ``publish_pipelined``.

A SelectConnection keeps up to ``window`` messages unconfirmed and settles them from the broker's
(possibly ``multiple``) acks. Persistent, mandatory messages, like Warren's.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import pika
from pika.frame import Method
from pika.spec import Basic

BODY = b"{}"


class _Pipeline:
    def __init__(self, exchange: str, routing_key: str, message_ids: Sequence[str], window: int) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.message_ids = message_ids
        self.window = window
        self.published = 0
        self.pending: deque[int] = deque()  # unconfirmed delivery tags, ascending
        self.acked = 0
        self.refused = 0
        self.error: str | None = None
        self.connection: pika.SelectConnection | None = None
        self.channel: Any = None

    @property
    def done(self) -> bool:
        return self.published == len(self.message_ids) and not self.pending

    def on_open(self, connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=self.on_channel)

    def on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_return_callback(self.on_return)
        channel.add_on_close_callback(self.on_channel_closed)
        channel.confirm_delivery(self.on_confirm, callback=lambda _frame: self.pump())

    def pump(self) -> None:
        now = int(time.time())
        while self.published < len(self.message_ids) and len(self.pending) < self.window:
            properties = pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=self.message_ids[self.published],
                type="noop",
                timestamp=now,
            )
            self.channel.basic_publish(self.exchange, self.routing_key, BODY, properties, mandatory=True)
            self.published += 1
            self.pending.append(self.published)

    def on_confirm(self, frame: Method) -> None:
        method = frame.method
        settled = self._settle(method.delivery_tag, bool(method.multiple))
        if isinstance(method, Basic.Nack):
            self.refused += settled
        else:
            self.acked += settled
        if self.done:
            self.close()
        else:
            self.pump()

    def _settle(self, tag: int, multiple: bool) -> int:
        if not multiple:
            self.pending.remove(tag)
            return 1
        count = 0
        while self.pending and self.pending[0] <= tag:
            self.pending.popleft()
            count += 1
        return count

    def on_return(self, *_args: Any) -> None:
        self.refused += 1  # the broker still acks a returned message: counted as refused here

    def on_channel_closed(self, _channel: Any, reason: Exception) -> None:
        if not self.done:
            self.fail(f"channel closed: {reason}")

    def on_closed(self, connection: pika.SelectConnection, reason: Exception) -> None:
        if not self.done:
            self.fail(f"connection closed: {reason}")
        connection.ioloop.stop()

    def on_open_error(self, connection: pika.SelectConnection, error: Exception) -> None:
        self.error = f"cannot connect: {error}"
        connection.ioloop.stop()

    def fail(self, why: str) -> None:
        self.error = self.error or why
        self.close()

    def close(self) -> None:
        if self.connection is not None and self.connection.is_open:
            self.connection.close()


def publish(
    url: str, exchange: str, routing_key: str, message_ids: Sequence[str], *, window: int, timeout: float = 300.0
) -> None:
    """Publish one message per id and return once every one is confirmed; raise on any refusal."""
    pipeline = _Pipeline(exchange, routing_key, message_ids, window)
    run_pipeline(url, pipeline, timeout=timeout, what="raw publish", total=len(message_ids))


def run_pipeline(url: str, pipeline: _Pipeline, *, timeout: float, what: str, total: int) -> None:
    """Run ``pipeline`` on its own SelectConnection until it is done; raise on any refusal."""
    connection = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=pipeline.on_open,
        on_open_error_callback=pipeline.on_open_error,
        on_close_callback=pipeline.on_closed,
    )
    pipeline.connection = connection
    connection.ioloop.call_later(timeout, lambda: pipeline.fail(f"timed out after {timeout:.0f}s"))
    connection.ioloop.start()
    if pipeline.error or pipeline.refused or not pipeline.done:
        raise RuntimeError(
            f"{what}: {pipeline.acked} of {total} confirmed, {pipeline.refused} refused"
            f"{': ' + pipeline.error if pipeline.error else ''}"
        )
