"""Message contents that used to stall or crash a worker, each now a dead letter with a reason
(or a clean run), checked through the real delivery handling without a broker."""

from __future__ import annotations

import struct
import sys
from datetime import UTC, datetime

import pika.data
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warren.broker import decoding
from warren.config import Settings
from warren.messages import H_DUE_AT, MAX_SHORT_STRING, Outgoing, derived_id
from warren.producer import delayed, task_message
from warren.testing import run_task
from warren.testing.selftest import pool
from warren.topology import DELAY_TIERS_MS, Names, PoolSpec, pool_names
from warren.worker import deadletter

SETTINGS = Settings(_env_file=None, retry_max_attempts=3)


def test_json_nested_deeper_than_python_can_decode_is_a_malformed_body() -> None:
    result = run_task(pool, "work", b"[" * 50_000, settings=SETTINGS)
    assert (result.outcome, result.reason, result.error_class) == ("dead_lettered", "malformed_body", "RecursionError")


def test_a_message_without_a_type_says_so() -> None:
    result = run_task(pool, None, {}, settings=SETTINGS)
    assert result.reason == "unknown_task"
    assert "without a type" in (result.error_message or "") and "None" not in (result.error_message or "")


def test_a_250_byte_message_id_still_gets_event_ids_amqp_can_carry() -> None:
    long_id = "x" * 250
    result = run_task(pool, "work", {"ms": 0}, settings=SETTINGS, message_id=long_id)
    assert result.completed
    [event] = result.publishes
    assert len(event.message_id.encode()) <= MAX_SHORT_STRING
    assert event.message_id == derived_id(long_id, "selftest.e1")  # the same on every redelivery


def test_derived_ids_stay_readable_when_short_and_distinct_when_hashed() -> None:
    assert derived_id("order-1", "orders.e1") == "order-1/orders.e1"
    assert derived_id("a" * 300, "p.e1") != derived_id("a" * 299 + "b", "p.e1")


@pytest.mark.parametrize("forged", [2**63 - 1, -5, "7", True, 10**30])
def test_a_forged_attempt_header_never_overflows_what_is_published_back(forged: object) -> None:
    failing = run_task(pool, "fail", {}, settings=SETTINGS, headers={deadletter.H_ATTEMPT: forged})
    working = run_task(pool, "work", {"ms": 0}, settings=SETTINGS, headers={deadletter.H_ATTEMPT: forged})
    assert working.completed
    assert failing.outcome in ("retry", "dead_lettered")
    for message in failing.publishes:
        for value in (message.headers or {}).values():
            assert not isinstance(value, int) or -(2**63) <= value < 2**63


def _header_table(name: str, kind: bytes, payload: bytes) -> bytes:
    """An AMQP field table with one field, encoded by hand (pika cannot encode these values)."""
    field = bytes([len(name)]) + name.encode() + kind + payload
    return struct.pack(">I", len(field)) + field


def test_a_timestamp_header_past_the_year_9999_decodes_as_a_value_the_worker_can_dead_letter() -> None:
    decoding.install()
    table = _header_table("sent-at", b"T", struct.pack(">Q", 2**62))
    headers, offset = pika.data.decode_table(table, 0)
    assert offset == len(table)
    assert isinstance(headers["sent-at"], decoding.UndecodableValue)
    assert decoding.undecodable(headers) == ["sent-at: timestamp 4611686018427387904 is out of range"]
    # an ordinary timestamp still decodes as pika always did
    ok, _ = pika.data.decode_table(_header_table("t", b"T", struct.pack(">Q", 1_700_000_000)), 0)
    assert ok["t"] == datetime.fromtimestamp(1_700_000_000, UTC)


def test_headers_nested_past_the_recursion_limit_decode_without_raising() -> None:
    decoding.install()
    inner = b""
    for _ in range(sys.getrecursionlimit() + 100):  # pika alone would raise RecursionError
        field = b"\x01a" + b"F" + struct.pack(">I", len(inner)) + inner
        inner = field
    table = struct.pack(">I", len(inner)) + inner
    headers, offset = pika.data.decode_table(table, 0)
    assert offset == len(table)
    [problem] = decoding.undecodable(headers)
    assert "nested deeper than" in problem


def test_undecodable_headers_are_dead_lettered_as_malformed_headers_with_their_text() -> None:
    result = run_task(pool, "work", {"ms": 0}, settings=SETTINGS,
                      headers={"sent-at": decoding.UndecodableValue("timestamp 4611686018427387904 is out of range")})
    assert (result.outcome, result.reason) == ("dead_lettered", "malformed_headers")
    assert "sent-at: timestamp 4611686018427387904 is out of range" in (result.error_message or "")
    [dead_letter] = result.publishes
    assert dead_letter.headers["sent-at"] == "timestamp 4611686018427387904 is out of range"  # cleaned: text


@settings(max_examples=200, deadline=None)
@given(delay_ms=st.integers(min_value=1_000, max_value=3 * 86_400_000), hop_lag_ms=st.integers(0, 150))
def test_a_delayed_task_lands_within_a_second_of_its_due_time(delay_ms: int, hop_lag_ms: int) -> None:
    """The producer parks it in the longest delay tier not past the wait; each time it comes back
    early the worker parks it again for what remains. Simulated with the real functions on a
    clock that each delay queue advances by its TTL (plus a little lag per hop)."""
    from warren.worker.handling import Processor

    names = pool_names(SETTINGS, PoolSpec("selftest"))
    processor = Processor.for_settings(pool, SETTINGS, worker="sim")
    now = 1_000_000_000
    due = now + delay_ms
    message: Outgoing = delayed(task_message(Names("warren"), "selftest", "work", {"ms": 0}), names,
                                due_at_ms=due, now_ms=now)
    hops = 0
    while message.exchange == "":  # parked in a delay queue
        tier = next(d for d, q in names.retry_queues if q == message.routing_key)
        now += tier + hop_lag_ms
        hops += 1
        result = processor.handle(_as_delivery(message), now_ms=now)
        if result.action.__class__.__name__ != "Defer":
            break
        [message] = result.publishes
    assert abs(now - due) <= 1_000 + hop_lag_ms, (now - due, hops)
    assert hops <= 60  # a three-day wait hops through hour-long tiers, not second-long ones


def _as_delivery(message: Outgoing):
    from warren.messages import Delivery

    return Delivery(delivery_tag=1, redelivered=False, exchange="", routing_key=message.routing_key,
                    body=message.body, message_id=message.message_id, type=message.type,
                    headers=dict(message.headers or {}), queue="warren.selftest")


def test_the_delay_tiers_every_pool_has_reach_an_hour() -> None:
    assert DELAY_TIERS_MS[0] == 1_000 and DELAY_TIERS_MS[-1] == 86_400_000
    assert H_DUE_AT == "x-warren-due-at"
