"""Dead-letter reasons: what the worker writes and what the broker writes read back the same way."""

from __future__ import annotations

import datetime as dt

from warren.worker.deadletter import Reason, describe, headers_for


def test_worker_dead_letters_say_why_with_error_attempts_queue_and_time() -> None:
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    headers = headers_for(
        reason=Reason.RETRIES_EXHAUSTED, error_class="Timeout", error_message="x" * 5000, attempts=5,
        queue="shop.orders", now=at,
    )
    info = describe(headers)
    assert info is not None
    assert (info.reason, info.error_class, info.attempts, info.original_queue) == (
        "retries_exhausted", "Timeout", 5, "shop.orders"
    )
    assert info.at == "2026-01-02T03:04:05.000+00:00"
    assert len(info.error_message or "") == 1000  # bounded: a huge error never bloats the DLQ
    assert not info.by_broker


def test_a_broker_delivery_limit_reads_as_a_crash_loop() -> None:
    info = describe({"x-first-death-reason": "delivery_limit", "x-first-death-queue": "shop.orders",
                     "x-death": [{"time": dt.datetime(2026, 1, 1)}]})
    assert info is not None
    assert (info.reason, info.original_queue, info.by_broker) == ("crash_loop", "shop.orders", True)


def test_a_message_without_any_reason_is_not_described() -> None:
    assert describe({"x-custom": 1}) is None
