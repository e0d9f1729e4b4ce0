"""Publishing tasks: one at a time or in pipelined batches, always confirmed and mandatory."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from warren.broker import Session, connection_parameters, publish_pipelined
from warren.config import Settings
from warren.errors import PublishRefused
from warren.messages import Outgoing, encode_json
from warren.topology import Names

if TYPE_CHECKING:
    from warren.worker.pool import Task

P = TypeVar("P")


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
    )


class Producer:
    """Publishes tasks; a publish returns only once the broker has confirmed the message."""

    def __init__(self, settings: Settings, *, name: str = "warren-producer") -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.name = name
        self._session: Session | None = None

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _connected(self) -> Session:
        if self._session is None or not self._session.is_open:
            self.close()
            self._session = Session.open(self.settings, name=self.name)
        return self._session

    def send(
        self,
        task: Task[P],
        payload: P | Mapping[str, Any],
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
    ) -> str:
        """Publish ``task`` with ``payload``, validated against the task's schema first (pydantic's
        ValidationError, and nothing published, when it does not fit); returns the message id."""
        return self.publish(
            task.pool, task.name, task.validate(payload), message_id=message_id, correlation_id=correlation_id
        )

    def publish(self, pool: str, task_type: str, payload: Any, **options: Any) -> str:
        """Publish one task; returns its message id. Raises PublishRefused or BrokerUnavailable."""
        message = task_message(self.names, pool, task_type, payload, **options)
        self.publish_message(message)
        return message.message_id

    def publish_message(self, message: Outgoing) -> None:
        try:
            self._connected().publish(message)
        except PublishRefused:
            raise
        except Exception:
            self.close()
            raise

    def publish_batch(self, messages: Iterable[Outgoing], *, window: int = 1000) -> None:
        """Publish many messages with pipelined confirms; raises if any one was refused."""
        batch = list(messages)
        refused = publish_pipelined(connection_parameters(self.settings, name=self.name), batch, window=window)
        if refused:
            sample = ", ".join(f"{mid} ({why})" for mid, why in refused[:5])
            raise PublishRefused(f"{len(refused)} of {len(batch)} messages refused: {sample}")

    def request(self, pool: str, task_type: str, payload: Any, *, timeout: float) -> Any:
        """Request/reply over direct reply-to: the handler's return value, or RequestTimeout."""
        correlation_id = uuid.uuid4().hex
        message = task_message(
            self.names, pool, task_type, payload, correlation_id=correlation_id, reply_to=Session.REPLY_TO
        )
        return self._connected().request(message, timeout=timeout)

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
