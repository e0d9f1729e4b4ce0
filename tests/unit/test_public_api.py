"""The public surface as a user meets it: ``from warren import ...``, ``@pool.task``, sending with
a handle, and testing handlers with ``warren.testing.run_task`` and no broker."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from pydantic import BaseModel, ValidationError

from warren import PermanentError, Pool, Producer, RetryableError, Settings, TaskContext
from warren.messages import H_DUE_AT
from warren.testing import run_task

SETTINGS = Settings(_env_file=None, retry_max_attempts=4, retry_initial_delay_ms=1000, retry_max_delay_ms=8000)

pool = Pool("payments")


class Charge(BaseModel):
    order_id: str
    cents: int


@pool.task
def charge(payload: Charge, ctx: TaskContext) -> dict[str, object]:
    if payload.cents < 0:
        raise PermanentError("refunds are not charges")
    if payload.cents == 429:
        raise RetryableError("gateway rate limit", delay=30)
    if payload.cents == 500:
        raise RetryableError("gateway down")
    ctx.logger.info("charging %s", payload.order_id)
    ctx.emit("payment.completed", {"order_id": payload.order_id})
    ctx.send(receipt, {"order_id": payload.order_id})
    return {"charged": payload.cents}


@pool.task(max_attempts=2, retry_delays=(3,))
def receipt(payload: dict[str, str], ctx: TaskContext) -> None:
    raise RuntimeError("printer jammed")


@pool.task("refund.requested", schema=None)
@pool.task("refund.approved", schema=None)
def refund(payload: object, ctx: TaskContext) -> None:
    """One handler under two names (events routed into the pool)."""


def test_a_task_takes_its_name_from_the_function_and_its_schema_from_the_annotation() -> None:
    assert (charge.pool, charge.name, charge.schema) == ("payments", "charge", Charge)
    assert receipt.schema is None  # a dict annotation is no model: the decoded JSON as it is
    assert {"refund.requested", "refund.approved"} <= set(pool.tasks)
    assert pool.tasks["refund.requested"].handler is pool.tasks["refund.approved"].handler


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already has a task 'charge'"):
        pool.task(charge.handler)


def test_success_publishes_events_and_follow_ups_then_acks() -> None:
    result = run_task(pool, "charge", Charge(order_id="o-1", cents=250), settings=SETTINGS)
    assert result.completed and result.returned == {"charged": 250}
    assert result.events == (("payment.completed", {"order_id": "o-1"}),)
    assert result.tasks == (("payments", "receipt", {"order_id": "o-1"}),)


def test_a_handle_runs_too_and_a_plain_call_is_the_handler() -> None:
    assert run_task(charge, {"order_id": "o-2", "cents": 1}, settings=SETTINGS).completed
    assert charge.handler is not None and callable(charge)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed_body"),  # not JSON
        (b"\xff\xfe", "malformed_body"),  # not UTF-8
        ({"order_id": "o-3"}, "schema_violation"),  # cents missing
        ({"order_id": "o-3", "cents": -5}, "permanent_failure"),  # the handler says never
    ],
)
def test_bad_input_and_permanent_failures_are_dead_lettered_with_a_reason(body: object, reason: str) -> None:
    result = run_task(pool, "charge", body, settings=SETTINGS)
    assert (result.outcome, result.reason) == ("dead_lettered", reason)
    assert result.events == () and result.tasks == ()


def test_an_unknown_task_type_is_dead_lettered() -> None:
    result = run_task(pool, "chrage", {}, settings=SETTINGS)
    assert (result.outcome, result.reason) == ("dead_lettered", "unknown_task")
    assert "chrage" in (result.error_message or "")


def test_a_failure_is_retried_with_the_pool_backoff_then_dead_lettered() -> None:
    first = run_task(pool, "charge", {"order_id": "o-4", "cents": 500}, settings=SETTINGS)
    assert (first.outcome, first.retry_delay, first.error_class) == ("retry", 1.0, "RetryableError")
    third = run_task(pool, "charge", {"order_id": "o-4", "cents": 500}, settings=SETTINGS, attempt=3)
    assert third.retry_delay == 4.0
    last = run_task(pool, "charge", {"order_id": "o-4", "cents": 500}, settings=SETTINGS, attempt=4)
    assert (last.outcome, last.reason) == ("dead_lettered", "retries_exhausted")


def test_a_task_overrides_max_attempts_and_delays() -> None:
    first = run_task(receipt, {"order_id": "o-5"}, settings=SETTINGS)
    assert (first.outcome, first.retry_delay) == ("retry", 3.0)
    assert first.publishes[0].routing_key.endswith(".payments.retry.3000")  # its own delay tier
    second = run_task(receipt, {"order_id": "o-5"}, settings=SETTINGS, attempt=2)
    assert (second.outcome, second.reason) == ("dead_lettered", "retries_exhausted")


def test_a_retry_delay_the_handler_asks_for_beyond_every_tier_is_waited_out_in_hops() -> None:
    result = run_task(pool, "charge", {"order_id": "o-6", "cents": 429}, settings=SETTINGS)
    assert (result.outcome, result.retry_delay) == ("retry", 30.0)
    parked = result.publishes[0]
    assert parked.routing_key.endswith(".payments.retry.10000")  # the longest tier not past 30 s
    due_at = parked.headers[H_DUE_AT]
    # Back from its delay queue 10 s later: not due, parked again without running or counting.
    again = run_task(pool, "charge", {"order_id": "o-6", "cents": 429}, settings=SETTINGS, attempt=2,
                     headers={H_DUE_AT: due_at})
    assert again.outcome == "deferred" and again.attempt == 1
    assert again.publishes[0].headers[H_DUE_AT] == pytest.approx(due_at, abs=1000)


def test_a_message_in_flight_when_its_worker_died_is_isolated_then_runs_alone() -> None:
    payload = {"order_id": "o-7", "cents": 1}
    moved = run_task(pool, "charge", payload, settings=SETTINGS, redelivered=True)
    assert moved.outcome == "isolated" and moved.publishes[0].routing_key.endswith(".payments.suspect")
    assert run_task(pool, "charge", payload, settings=SETTINGS, deaths=SETTINGS.delivery_limit - 1).completed
    crashed = run_task(pool, "charge", payload, settings=SETTINGS, deaths=SETTINGS.delivery_limit)
    assert (crashed.outcome, crashed.reason) == ("dead_lettered", "crash_loop")


def test_the_context_is_frozen_and_its_logger_names_the_task(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[TaskContext] = []
    probe = Pool("probe")

    @probe.task
    def look(payload: object, ctx: TaskContext) -> None:
        seen.append(ctx)
        ctx.logger.info("looking")

    with caplog.at_level(logging.INFO, logger="warren.task"):
        run_task(probe, "look", {}, settings=SETTINGS, message_id="m-42", correlation_id="order-9")
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[0].attempt = 7  # type: ignore[misc]
    record = next(r for r in caplog.records if "looking" in r.getMessage())
    assert "m-42" in record.getMessage() and "order-9" in record.getMessage()
    assert (record.task_id, record.correlation_id) == ("m-42", "order-9")  # type: ignore[attr-defined]


def test_send_checks_the_payload_before_anything_is_published() -> None:
    producer = Producer(SETTINGS)  # never connects: the payload is refused first
    with pytest.raises(ValidationError):
        producer.send(charge, {"order_id": "o-8", "cents": "lots"})
    assert producer._session is None


def test_retryable_error_refuses_a_negative_delay() -> None:
    with pytest.raises(ValueError, match="negative"):
        RetryableError("x", delay=-1)
