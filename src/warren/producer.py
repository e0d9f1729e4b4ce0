"""Publishing tasks: one at a time or in pipelined batches, always confirmed and mandatory.

A producer's connection may die while it sits idle (a ``BlockingConnection`` sends heartbeats only
when called, so the broker closes a connection idle for two heartbeat intervals) or with a broker
restart. A publish therefore reconnects and publishes again when the connection fails under it,
with the same message id, until ``WARREN_PUBLISH_TIMEOUT``: a message whose confirm was lost may be
delivered twice (at-least-once), never silently dropped.

A delayed publish goes to the target pool's delay queue whose delay is the longest not past the
wait, with its due time in ``x-warren-due-at``; the pool's worker parks it again for what remains
(see ``warren.worker.handling``), so a long delay never blocks a short one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from warren.broker import Session, connection_parameters, publish_pipelined
from warren.config import Settings
from warren.errors import BrokerUnavailable, PublishRefused
from warren.messages import H_DUE_AT, Outgoing, encode_json
from warren.topology import DELAY_TIERS_MS, Names, PoolNames, PoolSpec, pool_names

if TYPE_CHECKING:
    from warren.worker.pool import Task

P = TypeVar("P")
R = TypeVar("R")
log = logging.getLogger(__name__)


def task_message(
    names: Names,
    pool: str,
    task_type: str,
    payload: Any,
    *,
    message_id: str | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    headers: Mapping[str, Any] | None = None,
    expiration_ms: int | None = None,
) -> Outgoing:
    """A task for ``pool`` through the tasks exchange; ``bytes`` payloads are sent as they are."""
    body = payload if isinstance(payload, bytes) else encode_json(payload)
    return Outgoing(
        exchange=names.tasks,
        routing_key=pool,
        body=body,
        message_id=message_id or uuid.uuid4().hex,
        type=task_type,
        correlation_id=correlation_id,
        reply_to=reply_to,
        headers=headers,
        expiration_ms=expiration_ms,
    )


def delayed(message: Outgoing, names: PoolNames, *, due_at_ms: int, now_ms: int) -> Outgoing:
    """``message`` routed through the pool's delay queues so it reaches the work queue at
    ``due_at_ms``; the message itself when it is due within half the shortest delay."""
    remaining = due_at_ms - now_ms
    if remaining * 2 <= DELAY_TIERS_MS[0]:
        return message
    tier, queue = names.retry_queue_for(remaining)
    headers = dict(message.headers or {})
    if tier < remaining:
        headers[H_DUE_AT] = due_at_ms
    return replace(message, exchange="", routing_key=queue, headers=headers)


class Producer:
    """Publishes tasks; a publish returns only once the broker has confirmed the message."""

    def __init__(self, settings: Settings, *, name: str = "warren-producer") -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.name = name
        self._session: Session | None = None
        self._used = 0.0

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _connected(self) -> Session:
        session = self._session
        if session is not None and time.monotonic() - self._used > self.settings.heartbeat:
            # Idle past a heartbeat: let pika read what arrived meanwhile (a close from the
            # broker, a heartbeat timeout), so a dead connection is found before it is used.
            try:
                session.run(0)
            except BrokerUnavailable:
                self.close()
                session = None
        if session is None or not session.is_open:
            self.close()
            session = self._session = Session.open(
                self.settings, name=self.name, blocked_timeout=self.settings.publish_timeout
            )
            log.debug("producer %s connected to %s", self.name, session.node)
        self._used = time.monotonic()
        return session

    def _with_retries(self, action: str, call: Callable[[Session], R]) -> R:
        """``call`` on a live session; on a connection failure, reconnect and call again until
        ``publish_timeout``. A refusal by the broker (unroutable, nacked) is final."""
        deadline = time.monotonic() + self.settings.publish_timeout
        pause = 0.05
        while True:
            try:
                return call(self._connected())
            except PublishRefused:
                raise
            except BrokerUnavailable as e:
                self.close()
                if time.monotonic() + pause >= deadline:
                    raise BrokerUnavailable(
                        f"{action}: the broker did not take it within {self.settings.publish_timeout:g}s: {e}"
                    ) from e
                log.info("%s: %s; reconnecting", action, e)
                time.sleep(pause)  # backoff between reconnects to a broker that is down
                pause = min(pause * 2, 1.0)
            except Exception:
                self.close()
                raise

    def send(
        self,
        task: Task[P],
        payload: P | Mapping[str, Any],
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        delay: float | None = None,
        deliver_at: datetime | None = None,
    ) -> str:
        """Publish ``task`` with ``payload``, validated against the task's schema first (pydantic's
        ValidationError, and nothing published, when it does not fit); returns the message id."""
        return self.publish(
            task.pool, task.name, task.validate(payload), message_id=message_id, correlation_id=correlation_id,
            delay=delay, deliver_at=deliver_at,
        )

    def publish(
        self,
        pool: str,
        task_type: str,
        payload: Any,
        *,
        delay: float | None = None,
        deliver_at: datetime | None = None,
        **options: Any,
    ) -> str:
        """Publish one task; returns its message id. ``delay`` (seconds) or ``deliver_at`` (an
        aware datetime) hold it back until then. Raises PublishRefused or BrokerUnavailable."""
        message = task_message(self.names, pool, task_type, payload, **options)
        if delay is not None or deliver_at is not None:
            message = self._delayed(message, pool, delay=delay, deliver_at=deliver_at)
        self.publish_message(message)
        return message.message_id

    def _delayed(self, message: Outgoing, pool: str, *, delay: float | None, deliver_at: datetime | None) -> Outgoing:
        if (delay is None) == (deliver_at is None):
            raise ValueError("give either delay or deliver_at, not both")
        now_ms = int(time.time() * 1000)
        if deliver_at is not None:
            if deliver_at.tzinfo is None:
                raise ValueError("deliver_at must be timezone-aware (e.g. datetime.now(UTC) + ...)")
            due_at_ms = int(deliver_at.timestamp() * 1000)
        else:
            assert delay is not None
            if delay < 0:
                raise ValueError(f"delay must not be negative, got {delay}")
            due_at_ms = now_ms + round(delay * 1000)
        return delayed(message, pool_names(self.settings, PoolSpec(pool)), due_at_ms=due_at_ms, now_ms=now_ms)

    def publish_message(self, message: Outgoing) -> None:
        self._with_retries(f"publishing {message.message_id}", lambda session: session.publish(message))

    def publish_batch(self, messages: Iterable[Outgoing], *, window: int = 1000) -> None:
        """Publish many messages with pipelined confirms; raises if any one was refused."""
        batch = list(messages)
        refused = publish_pipelined(connection_parameters(self.settings, name=self.name), batch, window=window)
        if refused:
            sample = ", ".join(f"{mid} ({why})" for mid, why in refused[:5])
            raise PublishRefused(f"{len(refused)} of {len(batch)} messages refused: {sample}")

    def request(self, pool: str, task_type: str, payload: Any, *, timeout: float) -> Any:
        """Request/reply over direct reply-to: the handler's return value, or RequestTimeout. The
        request expires with the timeout, so no worker runs it for a caller that has given up."""
        correlation_id = uuid.uuid4().hex
        message = task_message(
            self.names, pool, task_type, payload, correlation_id=correlation_id, reply_to=Session.REPLY_TO,
            expiration_ms=max(1, round(timeout * 1000)),
        )
        try:
            return self._connected().request(message, timeout=timeout)
        except BrokerUnavailable:
            self.close()
            raise

    def ping(self) -> None:
        """Raise unless the broker answers and the topology is in place."""
        try:
            self._connected().check_exchange(self.names.tasks)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
