"""One AMQP connection with a consuming channel and a confirming publish channel.

pika's BlockingConnection is not thread-safe: every method here must be called on the thread that
opened the session, except ``call_soon_threadsafe``, which is how handler threads hand results back.
pika's exceptions are translated into ``warren.errors`` at this boundary.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pika
import pika.exceptions as px
from pika.adapters.blocking_connection import BlockingChannel

from warren import metrics
from warren.broker import decoding
from warren.config import Settings, redact_url
from warren.errors import (
    BrokerUnavailable,
    Nacked,
    RequestTimeout,
    TopologyError,
    Unpublishable,
    Unroutable,
    WarrenError,
)
from warren.messages import Delivery, Outgoing

log = logging.getLogger(__name__)
decoding.install()

_CONNECTION_ERRORS = (
    px.AMQPConnectionError,
    px.ConnectionClosed,
    px.StreamLostError,
    px.ConnectionWrongStateError,
    px.ChannelWrongStateError,
    ConnectionError,
    socket.error,
)


def connection_parameters(
    settings: Settings, *, name: str, blocked_timeout: float | None = None
) -> list[pika.URLParameters]:
    """pika parameters for each broker address, in the order to try them; the URL's own options
    are kept, ours win where set.

    Several addresses (the nodes of a cluster) are tried from a different one each time a
    connection is opened, starting at a random one per process: clients spread over the nodes,
    and a reconnect after losing a node tries the next node first.

    ``blocked_timeout``: how long a connection the broker blocks (a memory or disk alarm) may stay
    blocked before pika closes it. ``None`` for workers: an alarm pauses them, it must not tear
    down their connection (every unacked message would be redelivered, and counted). Producers
    pass their publish timeout, so a caller hears "unavailable" instead of waiting forever."""
    urls = settings.resolved_broker_urls()
    start = next(_rotation) % len(urls)
    return [_parameters(url, settings, name=name, blocked_timeout=blocked_timeout)
            for url in urls[start:] + urls[:start]]


_rotation = itertools.count(random.SystemRandom().randrange(1 << 16))


def _parameters(url: str, settings: Settings, *, name: str, blocked_timeout: float | None) -> pika.URLParameters:
    try:
        params = pika.URLParameters(url)
    except Exception as e:  # pika raises several types for a malformed URL
        raise WarrenError(f"invalid broker URL {redact_url(url)}: {type(e).__name__}") from None
    params.heartbeat = settings.heartbeat
    params.blocked_connection_timeout = blocked_timeout
    params.socket_timeout = settings.connect_timeout
    params.stack_timeout = settings.connect_timeout * 2
    params.connection_attempts = 1
    params.client_properties = {"connection_name": name, "product": "warren"}
    return params


def to_properties(message: Outgoing) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=message.content_type,
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=message.message_id,
        type=message.type,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        headers=dict(message.headers) if message.headers else None,
        timestamp=message.timestamp,
        expiration=str(message.expiration_ms) if message.expiration_ms is not None else None,
    )


def to_delivery(
    method: Any, properties: pika.BasicProperties, body: bytes, *, channel: int = 0, queue: str | None = None
) -> Delivery:
    headers = properties.headers or {}
    return Delivery(
        delivery_tag=method.delivery_tag,
        redelivered=bool(method.redelivered),
        exchange=method.exchange,
        routing_key=method.routing_key,
        body=body,
        message_id=properties.message_id,
        type=properties.type,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        headers=headers,
        content_type=properties.content_type,
        timestamp=properties.timestamp,
        queue=queue,
        channel=channel,
        header_problems=tuple(decoding.undecodable(headers)),
    )


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Run a pika call, re-raising its failures as Warren errors."""
    try:
        yield
    except px.UnroutableError as e:
        raise Unroutable(f"{action}: no queue is bound for this message") from e
    except px.NackError as e:
        raise Nacked(f"{action}: the broker refused the message") from e
    except px.ChannelClosedByBroker as e:
        if e.reply_code in (404, 406):
            raise TopologyError(f"{action}: {e.reply_text}") from e
        raise BrokerUnavailable(f"{action}: channel closed by broker: {e.reply_code} {e.reply_text}") from e
    except px.ProbableAuthenticationError as e:
        raise BrokerUnavailable(f"{action}: the broker refused the credentials") from e
    except px.ProbableAccessDeniedError as e:
        raise BrokerUnavailable(f"{action}: access to the virtual host was refused") from e
    except _CONNECTION_ERRORS as e:
        raise BrokerUnavailable(f"{action}: {_why(e)}") from e


def _why(error: BaseException) -> str:
    """The innermost readable cause of a pika connection error (pika nests them in args)."""
    while True:
        inner = getattr(error, "exception", None)
        if not isinstance(inner, BaseException) and error.args and isinstance(error.args[0], BaseException):
            inner = error.args[0]
        if not isinstance(inner, BaseException):
            break
        error = inner
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Session:
    """A connection with a confirming publish channel and one channel per consumed queue.

    Channel 0 is created up front (``get`` reads through it); each further ``consume`` opens its
    own channel, so each queue has its own prefetch. Delivery tags are per channel: a ``Delivery``
    says which channel it came on, and ``ack``/``reject`` take it.
    """

    REPLY_TO = "amq.rabbitmq.reply-to"

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self._connection = connection
        self._replies: dict[str, bytes | None] | None = None  # awaited correlation id -> reply
        with translated("opening channels"):
            self._consume: BlockingChannel = connection.channel()
            self._publish: BlockingChannel = connection.channel()
            self._publish.confirm_delivery()
        self._channels: list[BlockingChannel] = [self._consume]
        self._consumers: list[tuple[BlockingChannel, str, str]] = []  # channel, queue, consumer tag
        self.cancelled_by_broker: list[str] = []  # queues whose consumer the broker cancelled
        self.blocked_reason: str | None = None  # set while the broker blocks publishers (an alarm)
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)

    @classmethod
    def open(cls, settings: Settings, *, name: str, blocked_timeout: float | None = None) -> Session:
        params = connection_parameters(settings, name=name, blocked_timeout=blocked_timeout)
        where = ", ".join(f"{p.host}:{p.port}" for p in params)
        with translated(f"connecting to {where}"):
            return cls(pika.BlockingConnection(params))

    @property
    def node(self) -> str:
        """host:port of the broker address this connection reached."""
        params = getattr(getattr(self._connection, "_impl", None), "params", None)
        return f"{params.host}:{params.port}" if params is not None else "?"

    @property
    def is_open(self) -> bool:
        return bool(self._connection.is_open and self._publish.is_open and all(c.is_open for c in self._channels))

    @property
    def consuming(self) -> bool:
        """Every consumer started is still receiving: the connection and its channel are open and
        the broker has not cancelled it (a deleted queue, a consumer timeout on some versions)."""
        return (
            bool(self._consumers)
            and not self.cancelled_by_broker
            and self._connection.is_open
            and all(channel.is_open for channel, _, _ in self._consumers)
        )

    def why_not_consuming(self) -> str:
        if self.cancelled_by_broker:
            return f"the broker cancelled the consumer of {', '.join(self.cancelled_by_broker)}"
        closed = [queue for channel, queue, _ in self._consumers if not channel.is_open]
        if closed:
            return f"the broker closed the channel consuming {', '.join(closed)}"
        return "the connection is closed"

    def _on_blocked(self, _connection: Any, frame: Any) -> None:
        self.blocked_reason = getattr(frame.method, "reason", None) or "blocked"
        log.warning("the broker blocks publishing (%s): pausing until it unblocks", self.blocked_reason)

    def _on_unblocked(self, _connection: Any, _frame: Any) -> None:
        log.info("the broker unblocked publishing")
        self.blocked_reason = None

    # -- topology -----------------------------------------------------------------------------
    def declare_exchange(self, name: str, kind: str) -> None:
        with translated(f"declaring exchange {name!r}"):
            self._publish.exchange_declare(name, exchange_type=kind, durable=True)

    def declare_queue(self, name: str, arguments: Mapping[str, Any]) -> None:
        with translated(f"declaring queue {name!r}"):
            self._publish.queue_declare(name, durable=True, arguments=dict(arguments))

    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        with translated(f"binding queue {queue!r} to {exchange!r}"):
            self._publish.queue_bind(queue, exchange, routing_key=routing_key)

    def bind_exchange(self, destination: str, source: str, routing_key: str) -> None:
        with translated(f"binding exchange {destination!r} to {source!r}"):
            self._publish.exchange_bind(destination, source, routing_key=routing_key)

    def check_exchange(self, name: str) -> None:
        """A round trip that fails unless the exchange exists: the cheapest readiness check."""
        with translated(f"checking exchange {name!r}"):
            self._publish.exchange_declare(name, passive=True)

    def check_queue(self, name: str) -> None:
        """A round trip that fails unless the queue exists (a passive declare: no permission needed)."""
        with translated(f"checking queue {name!r}"):
            self._publish.queue_declare(name, passive=True)

    def queue_depth(self, name: str) -> tuple[int, int]:
        """(ready messages, consumers) of an existing queue."""
        with translated(f"inspecting queue {name!r}"):
            ok = self._publish.queue_declare(name, passive=True).method
        return ok.message_count, ok.consumer_count

    # -- consuming ----------------------------------------------------------------------------
    def consume(
        self,
        queue: str,
        *,
        prefetch: int,
        on_delivery: Callable[[Delivery], None],
        arguments: Mapping[str, Any] | None = None,
    ) -> int:
        """Consume ``queue`` with manual acks on a channel of its own; returns the channel's number,
        which its deliveries carry. ``arguments`` are consumer arguments (``x-consumer-timeout``)."""
        with translated(f"consuming from {queue!r}"):
            if self._consumers:
                self._channels.append(self._connection.channel())
            number = len(self._channels) - 1
            channel = self._channels[number]

            def callback(_ch: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
                on_delivery(to_delivery(method, properties, body, channel=number, queue=queue))

            def cancelled(_frame: Any) -> None:
                log.warning("the broker cancelled the consumer of %s", queue)
                self.cancelled_by_broker.append(queue)

            channel.add_on_cancel_callback(cancelled)
            channel.basic_qos(prefetch_count=prefetch)
            tag = channel.basic_consume(queue, callback, auto_ack=False, arguments=dict(arguments or {}))
        self._consumers.append((channel, queue, tag))
        return number

    def cancel(self) -> None:
        """Stop new deliveries; messages already delivered stay ours to ack. Deliveries pika has
        read but not yet handed over are handed over first, so they are worked on, not requeued;
        pika requeues only what arrives between the cancel and the broker's reply to it."""
        consumers, self._consumers = self._consumers, []
        with translated("cancelling the consumers"):
            self._connection.process_data_events(time_limit=0)
            for channel, queue, tag in consumers:
                if channel.is_open and queue not in self.cancelled_by_broker:
                    channel.basic_cancel(tag)

    def ack(self, delivery_tag: int, *, multiple: bool = False, channel: int = 0) -> None:
        """Ack one delivery, or with ``multiple`` every unacked delivery up to and including it."""
        with translated("acknowledging"):
            self._channels[channel].basic_ack(delivery_tag, multiple=multiple)

    def reject(self, delivery_tag: int, *, channel: int = 0) -> None:
        """Reject without requeue: the queue's dead-letter exchange takes the message."""
        with translated("rejecting"):
            self._channels[channel].basic_reject(delivery_tag, requeue=False)

    def get(self, queue: str) -> Delivery | None:
        """Fetch one message with basic.get (manual ack on the consume channel), or None."""
        with translated(f"reading {queue!r}"):
            method, properties, body = self._consume.basic_get(queue, auto_ack=False)
        return None if method is None else to_delivery(method, properties, body, queue=queue)

    def requeue_unacked(self) -> None:
        """Give back every message fetched with ``get`` and not acked, to where it was in its queue
        (one ``basic.nack`` with multiple and requeue): how a reader leaves what it did not take."""
        with translated("returning unacknowledged messages"):
            self._consume.basic_nack(0, multiple=True, requeue=True)

    # -- publishing ---------------------------------------------------------------------------
    def publish(self, message: Outgoing, *, mandatory: bool = True) -> None:
        """Publish persistent and mandatory; returns only once the broker confirmed it.

        ``mandatory=False`` is for replies to direct reply-to only: RabbitMQ returns every
        mandatory publish to a reply-to address even when it delivers it.
        """
        where = f"{message.exchange or '(default)'}/{message.routing_key}"
        timer = metrics.publish_timer()
        started = time.perf_counter()
        try:
            properties = to_properties(message)
            # pika encodes the frame inside basic_publish; a value AMQP cannot carry (an id over
            # 255 bytes, an integer over 64 bits) fails there, before anything is sent.
            with translated(f"publishing to {where}"):
                self._publish.basic_publish(
                    message.exchange, message.routing_key, message.body, properties, mandatory=mandatory
                )
        except (ValueError, TypeError, OverflowError, struct.error, UnicodeEncodeError) as e:
            raise Unpublishable(f"publishing to {where}: AMQP cannot carry this message: {e}") from e
        if timer is not None:
            timer.observe(time.perf_counter() - started)

    def request(self, message: Outgoing, *, timeout: float) -> Any:
        """Publish a request with ``reply_to`` set to direct reply-to; the decoded JSON reply."""
        if message.correlation_id is None or message.reply_to != self.REPLY_TO:
            raise ValueError("a request needs a correlation_id and reply_to=Session.REPLY_TO")
        if self._replies is None:
            replies: dict[str, bytes | None] = {}

            def on_reply(_ch: Any, _method: Any, properties: pika.BasicProperties, body: bytes) -> None:
                if properties.correlation_id in replies:  # a late reply to an abandoned request is dropped
                    replies[properties.correlation_id] = body

            with translated("listening for replies"):
                self._publish.basic_consume(self.REPLY_TO, on_reply, auto_ack=True)
            self._replies = replies
        cid = message.correlation_id
        self._replies[cid] = None
        try:
            self.publish(message)
            deadline = time.monotonic() + timeout
            with translated("waiting for a reply"):
                while (reply := self._replies[cid]) is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise RequestTimeout(f"no reply to {message.type or 'request'} within {timeout:g}s")
                    self._connection.process_data_events(time_limit=min(remaining, 0.5))
        finally:
            self._replies.pop(cid, None)
        return json.loads(reply)

    # -- the I/O loop -------------------------------------------------------------------------
    def run(self, seconds: float) -> None:
        """Process network events (deliveries, heartbeats, scheduled callbacks) for up to ``seconds``."""
        with translated("processing events"):
            self._connection.process_data_events(time_limit=seconds)

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """Schedule ``callback`` on the session's thread; safe from any thread."""
        with translated("waking the I/O loop"):
            self._connection.add_callback_threadsafe(callback)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._connection.is_open:
                self._connection.close()
