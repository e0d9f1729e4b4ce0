"""Batch publishing with pipelined publisher confirms.

A BlockingChannel in confirm mode waits for each confirm before the next publish; for a batch that
costs a round trip per message. Here a SelectConnection keeps up to ``window`` messages unconfirmed
at once and settles each one from the broker's (possibly ``multiple``) acks, nacks and returns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions as px

from warren.broker.session import to_properties
from warren.errors import BrokerUnavailable
from warren.messages import Outgoing

log = logging.getLogger(__name__)


@dataclass
class _Batch:
    messages: Sequence[Outgoing]
    window: int
    next_index: int = 0
    next_tag: int = 1
    pending: dict[int, str] = field(default_factory=dict)  # delivery tag -> message id
    returned: set[str] = field(default_factory=set)
    refused: list[tuple[str, str]] = field(default_factory=list)
    confirmed: int = 0
    failure: str | None = None

    @property
    def done(self) -> bool:
        return self.next_index >= len(self.messages) and not self.pending


def publish_pipelined(
    params: Sequence[pika.ConnectionParameters],
    messages: Sequence[Outgoing],
    *,
    window: int = 1000,
    timeout: float = 120.0,
) -> list[tuple[str, str]]:
    """Publish every message persistent and mandatory; return the refused ones as (id, reason).

    The broker addresses are tried in order until one accepts the connection. Raises
    BrokerUnavailable when none does, or when the connection fails before every message is
    settled; the messages not yet confirmed may or may not have been taken, so a caller that
    republishes them must tolerate duplicates (consumers deduplicate by message id).
    """
    failures = []
    for candidate in params:
        try:
            return _publish_over(candidate, messages, window=window, timeout=timeout)
        except _CannotConnect as e:
            failures.append(f"{candidate.host}:{candidate.port}: {e}")
    raise BrokerUnavailable(f"batch publish: no broker address accepted a connection ({'; '.join(failures)})")


class _CannotConnect(BrokerUnavailable):
    """This address refused the connection before anything was published: try the next one."""


def _publish_over(
    params: pika.ConnectionParameters, messages: Sequence[Outgoing], *, window: int, timeout: float
) -> list[tuple[str, str]]:
    batch = _Batch(messages=messages, window=max(1, window))
    if not messages:
        return []
    channel_box: list[Any] = []

    def pump() -> None:
        channel = channel_box[0]
        while batch.next_index < len(batch.messages) and len(batch.pending) < batch.window:
            message = batch.messages[batch.next_index]
            channel.basic_publish(
                message.exchange, message.routing_key, message.body, to_properties(message), mandatory=True
            )
            batch.pending[batch.next_tag] = message.message_id
            batch.next_tag += 1
            batch.next_index += 1

    def settle(tag: int, multiple: bool, reason: str | None) -> None:
        tags = [t for t in batch.pending if t <= tag] if multiple else [tag]
        for t in tags:
            message_id = batch.pending.pop(t, None)
            if message_id is None:
                continue
            if reason is not None:
                batch.refused.append((message_id, reason))
            elif message_id in batch.returned:
                batch.refused.append((message_id, "unroutable"))
            else:
                batch.confirmed += 1
            batch.returned.discard(message_id)

    def on_confirm(frame: Any) -> None:
        method = frame.method
        nacked = isinstance(method, pika.spec.Basic.Nack)
        settle(method.delivery_tag, bool(method.multiple), "nacked" if nacked else None)
        if batch.done:
            connection.close()
        else:
            pump()

    def on_return(_channel: Any, _method: Any, properties: pika.BasicProperties, _body: bytes) -> None:
        batch.returned.add(properties.message_id)

    def on_channel_open(channel: Any) -> None:
        channel_box.append(channel)
        channel.add_on_return_callback(on_return)
        channel.add_on_close_callback(on_channel_closed)
        channel.confirm_delivery(on_confirm, callback=lambda _frame: pump())

    def on_channel_closed(_channel: Any, reason: Exception) -> None:
        if not batch.done and batch.failure is None:
            batch.failure = f"channel closed: {reason}"
        if connection.is_open:
            connection.close()

    def on_open(conn: pika.SelectConnection) -> None:
        conn.channel(on_open_callback=on_channel_open)

    def on_open_error(_conn: Any, error: Exception) -> None:
        batch.failure = f"cannot connect: {type(error).__name__}"
        connection.ioloop.stop()

    def on_closed(_conn: Any, reason: Exception) -> None:
        if not batch.done and batch.failure is None:
            batch.failure = f"connection closed: {reason}"
        connection.ioloop.stop()

    def on_timeout() -> None:
        batch.failure = f"timed out after {timeout:.0f}s with {len(batch.pending)} unconfirmed"
        if connection.is_open:
            connection.close()
        else:
            connection.ioloop.stop()

    connection = pika.SelectConnection(
        params, on_open_callback=on_open, on_open_error_callback=on_open_error, on_close_callback=on_closed
    )
    connection.ioloop.call_later(timeout, on_timeout)
    try:
        connection.ioloop.start()
    except px.AMQPError as e:
        batch.failure = batch.failure or f"{type(e).__name__}: {e}"
    if batch.failure is not None and batch.failure.startswith("cannot connect") and not batch.next_index:
        raise _CannotConnect(batch.failure)
    if batch.failure is not None and not batch.done:
        raise BrokerUnavailable(
            f"batch publish failed after {batch.confirmed} of {len(messages)} confirmed: {batch.failure}"
        )
    return batch.refused
