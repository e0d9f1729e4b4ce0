"""Testing with Warren: run a task without a broker, or a real broker and real workers.

``run_task`` hands one message to the same ``Processor`` a worker runs (validation, the handler,
the ack / retry / dead-letter decision, the follow-up messages) and tells what the worker would
do, with no broker and no thread::

    from warren.testing import run_task

    def test_a_declined_charge_is_not_retried():
        result = run_task(payments.pool, "charge", {"order_id": "o-1", "cents": 10**9})
        assert result.outcome == "dead_lettered" and result.reason == "permanent_failure"

For the real thing: ``LocalBroker`` (a private RabbitMQ node in a temp dir, on free ports),
``LocalWorker`` (``warren worker POOL`` as a process, to signal and kill), and ``Ledger`` (every
task completed, dead-lettered with a reason, duplicated, or lost).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from warren.broker.decoding import undecodable
from warren.config import Settings, load
from warren.messages import Delivery, Outgoing, encode_json
from warren.testing.broker import LocalBroker
from warren.testing.ledger import Ledger, Report
from warren.testing.processes import LocalWorker
from warren.worker import deadletter
from warren.worker.decision import Complete, DeadLetter, Defer, Isolate, Retry
from warren.worker.handling import Processor
from warren.worker.pool import Pool, Task

Outcome = Literal["completed", "retry", "dead_lettered", "deferred", "isolated"]

__all__ = ["Ledger", "LocalBroker", "LocalWorker", "Report", "TaskResult", "run_task"]


@dataclass(frozen=True)
class TaskResult:
    """What a worker would do with one message: every message is acked after its follow-ups are
    confirmed, so the question is only what is published, and why."""

    outcome: Outcome
    attempt: int  # the handler attempt this was (1 for a first delivery)
    reason: str | None  # the dead-letter reason (``schema_violation``, ``retries_exhausted``, ...)
    error_class: str | None
    error_message: str | None
    retry_delay: float | None  # seconds until the retry, when ``outcome == "retry"``
    events: tuple[tuple[str, Any], ...]  # (event name, decoded data) published on success
    tasks: tuple[tuple[str, str, Any], ...]  # (pool, task type, decoded payload) sent on success
    returned: Any  # the handler's return value (a request/reply caller's reply)
    publishes: tuple[Outgoing, ...]  # exactly what would be published, in order

    @property
    def completed(self) -> bool:
        return self.outcome == "completed"


def run_task(
    target: Pool | Task[Any],
    task_type: str | Any,
    payload: Any = None,
    *,
    settings: Settings | None = None,
    message_id: str = "test-message",
    correlation_id: str | None = None,
    attempt: int = 1,
    redelivered: bool = False,
    deaths: int = 0,
    headers: dict[str, Any] | None = None,
) -> TaskResult:
    """Run one message through the real delivery handling of a worker of ``target``.

    ``run_task(pool, "charge", payload)`` or ``run_task(charge, payload)``. The payload may be a
    pydantic model, anything JSON-serialisable, or ``bytes`` sent as the body as they are (to test
    malformed input). ``attempt`` > 1 runs it as a retry. ``redelivered`` delivers it as a message
    that was in flight when a worker died (a worker moves it to the suspect queue); ``deaths`` > 0
    runs it from the suspect queue after that many workers died holding it. ``settings`` default to the environment's
    (``WARREN_RETRY_MAX_ATTEMPTS`` and the other ``WARREN_*`` knobs apply as in a worker).
    """
    if isinstance(target, Task):
        pool, task_type, payload = Pool(target.pool), target.name, task_type
        pool._tasks[target.name] = target
    else:
        pool = target
    settings = settings if settings is not None else load(Settings)
    processor = Processor.for_settings(pool, settings, worker="warren.testing")
    all_headers: dict[str, Any] = dict(headers or {})
    if attempt > 1:
        all_headers[deadletter.H_ATTEMPT] = attempt - 1
    if deaths:
        all_headers[deadletter.H_DEATHS] = 1
        all_headers["x-delivery-count"] = deaths - 1
    body = payload if isinstance(payload, bytes) else encode_json(payload)
    delivery = Delivery(
        delivery_tag=1,
        redelivered=redelivered or deaths > 1,
        queue=processor.pool_names.suspect_queue if deaths else processor.pool_names.queue,
        exchange=processor.names.tasks,
        routing_key=pool.name,
        body=body,
        message_id=message_id,
        type=task_type,
        correlation_id=correlation_id,
        headers=all_headers,
        header_problems=tuple(undecodable(all_headers)),
    )
    result = processor.handle(delivery)
    action = result.action
    names = processor.names
    events = tuple((m.routing_key, _decoded(m.body)) for m in result.publishes if m.exchange == names.events)
    tasks = tuple(
        (m.routing_key, m.type or "", _decoded(m.body)) for m in result.publishes if m.exchange == names.tasks
    )
    match action:
        case Complete():
            outcome: Outcome = "completed"
        case Retry():
            outcome = "retry"
        case DeadLetter():
            outcome = "dead_lettered"
        case Defer():
            outcome = "deferred"
        case Isolate():
            outcome = "isolated"
    return TaskResult(
        outcome=outcome,
        attempt=result.attempt,
        reason=str(action.reason) if isinstance(action, DeadLetter) else None,
        error_class=action.error_class if isinstance(action, (Retry, DeadLetter)) else None,
        error_message=action.error_message if isinstance(action, (Retry, DeadLetter)) else None,
        retry_delay=action.delay_ms / 1000 if isinstance(action, Retry) else None,
        events=events,
        tasks=tasks,
        returned=result.returned,
        publishes=result.publishes,
    )


def _decoded(body: bytes) -> Any:
    return json.loads(body)
