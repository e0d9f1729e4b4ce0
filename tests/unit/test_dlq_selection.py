"""Choosing dead letters and building their replayed copies: pure parts of ``warren.dlq``."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from warren.dlq import H_REPLAYS, NothingSelected, Selection, entry_of, parse_duration, replayed
from warren.messages import Delivery
from warren.worker import deadletter
from warren.worker.deadletter import Reason

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def dead_letter(*, message_id: str | None = "m-1", task_type: str = "charge", reason: Reason = Reason.PERMANENT_FAILURE,
                error_class: str = "PermanentError", age: timedelta = timedelta(hours=1)) -> Delivery:
    headers = deadletter.headers_for(reason=reason, error_class=error_class, error_message="no", attempts=2,
                                     queue="ns.payments", now=NOW - age)
    headers[deadletter.H_ATTEMPT] = 1
    headers[deadletter.H_HISTORY] = [{"attempt": 1, "at_ms": 1, "error": "E: first"}]
    headers["x-death"] = [{"reason": "rejected"}]
    return Delivery(delivery_tag=1, redelivered=False, exchange="ns.dlx", routing_key="ns.payments", body=b'{"a":1}',
                    message_id=message_id, type=task_type, correlation_id="c-1", headers=headers, timestamp=1000)


ENTRY = entry_of("payments", dead_letter())


@pytest.mark.parametrize(("selection", "matches"), [
    (Selection(), True),  # no criteria: everything
    (Selection(ids=frozenset({"m-1"})), True),
    (Selection(ids=frozenset({"m-2"})), False),
    (Selection(reasons=frozenset({"permanent_failure", "crash_loop"})), True),
    (Selection(reasons=frozenset({"crash_loop"})), False),
    (Selection(task_types=frozenset({"refund"})), False),
    (Selection(error_classes=frozenset({"PermanentError"})), True),
    (Selection(older_than=timedelta(minutes=30)), True),  # an hour old
    (Selection(older_than=timedelta(hours=2)), False),
    (Selection(newer_than=timedelta(hours=2)), True),
    (Selection(newer_than=timedelta(minutes=30)), False),
    (Selection(reasons=frozenset({"permanent_failure"}), task_types=frozenset({"refund"})), False),  # all must hold
])
def test_a_selection_matches_on_every_criterion_it_has(selection: Selection, matches: bool) -> None:
    assert selection.matches(ENTRY, now=NOW) is matches


def test_an_entry_of_unknown_age_matches_no_age_filter() -> None:
    unknown = entry_of("payments", replace(dead_letter(), headers={}))
    assert unknown.reason == "unknown" and unknown.dead_lettered_at is None
    assert not Selection(older_than=timedelta(0)).matches(unknown, now=NOW)


def test_replay_and_purge_refuse_an_empty_selection_unless_told_everything() -> None:
    with pytest.raises(NothingSelected):
        Selection().require()
    assert Selection(everything=True).require().everything
    assert Selection(reasons=frozenset({"x"})).require()


def test_a_message_without_an_id_is_named_by_its_body() -> None:
    entry = entry_of("payments", dead_letter(message_id=None), position=3)
    assert entry.id.startswith("~") and len(entry.id) == 17 and entry.message_id is None


def test_the_replayed_copy_starts_afresh_keeps_its_history_and_records_the_replay() -> None:
    delivery = dead_letter()
    copy = replayed(ENTRY, delivery, work_queue="ns.payments", now_ms=42)
    assert (copy.exchange, copy.routing_key) == ("", "ns.payments")
    assert (copy.message_id, copy.type, copy.correlation_id, copy.body) == ("m-1", "charge", "c-1", b'{"a":1}')
    headers = dict(copy.headers or {})
    assert deadletter.H_ATTEMPT not in headers and deadletter.H_REASON not in headers and "x-death" not in headers
    assert headers[deadletter.H_HISTORY] == [{"attempt": 1, "at_ms": 1, "error": "E: first"}]
    assert headers[H_REPLAYS] == [{"at_ms": 42, "reason": "permanent_failure", "attempts": 2}]
    again = replayed(ENTRY, replace(delivery, headers=headers), work_queue="ns.payments", now_ms=43)
    assert len(dict(again.headers or {})[H_REPLAYS]) == 2


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1.5d", 129600)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1m", "nan", "inf", "1e20d"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
