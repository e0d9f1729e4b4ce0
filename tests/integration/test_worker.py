"""The worker against a real RabbitMQ: acks, retries, dead letters, bad input, request/reply."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import pytest

from warren.errors import PublishRefused, RequestTimeout, TopologyError, Unroutable
from warren.messages import Outgoing
from warren.producer import task_message
from warren.testing.ledger import Ledger
from warren.topology import Names

pytestmark = pytest.mark.broker


def test_fair_dispatch_gives_the_fast_worker_more_work(rig) -> None:
    rig.apply_topology()
    rig.worker("fast")
    rig.worker("slow", WARREN_SELFTEST_EXTRA_MS="400")
    ids = [rig.producer.publish("selftest", "work", {"ms": 20}) for _ in range(30)]

    report = rig.account(ids, timeout=60)

    assert (report.completed, report.lost, report.duplicates) == (30, 0, 0)
    by_worker: dict[str, int] = {}
    for events in rig.ledger.events.values():
        by_worker[events[0]["worker"]] = by_worker.get(events[0]["worker"], 0) + 1
    fast = by_worker.get(rig.workers[0].ident, 0)
    slow = 30 - fast
    # Round-robin without prefetch 1 would split 15/15; fair dispatch follows capacity.
    assert fast >= 3 * slow, f"fast={fast} slow={slow}"


def test_a_failing_handler_is_retried_with_growing_delays_then_dead_lettered(rig) -> None:
    rig.apply_topology()
    rig.worker()
    task = rig.producer.publish("selftest", "fail", {"message": "payment gateway down"})

    report = rig.account([task], timeout=30)

    assert (report.completed, report.dead_lettered, report.lost) == (0, 1, 0)
    info = rig.ledger.dead[task]
    assert (info.reason, info.error_class, info.error_message, info.attempts) == (
        "retries_exhausted", "RetryableError", "payment gateway down", 4
    )
    assert info.original_queue == f"{rig.settings.namespace}.selftest"
    history = rig.ledger.dead_headers[task]["x-warren-history"]
    assert [h["attempt"] for h in history] == [1, 2, 3, 4]
    gaps = [b["at_ms"] - a["at_ms"] for a, b in itertools.pairwise(history)]
    # 200, 400, 800 ms of backoff: each wait at least its delay, and each longer than the last.
    assert all(gap >= delay for gap, delay in zip(gaps, (200, 400, 800), strict=True)), gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps


def test_a_permanent_error_is_dead_lettered_without_retrying(rig) -> None:
    rig.apply_topology()
    rig.worker()
    task = rig.producer.publish("selftest", "refuse", {"message": "card declined"})

    report = rig.account([task], timeout=20)

    assert report.reasons == {"permanent_failure": 1}
    assert rig.ledger.dead[task].attempts == 1


def test_bad_input_is_dead_lettered_at_once_and_the_worker_carries_on(rig) -> None:
    rig.apply_topology()
    worker = rig.worker(WARREN_MAX_BODY_BYTES="2048")
    names = Names(rig.settings.namespace)
    bad = {
        "malformed_json": task_message(names, "selftest", "work", b'{"ms": 1,'),
        "not_utf8": task_message(names, "selftest", "work", b"\xff\xfe\x00garbage"),
        "wrong_schema": task_message(names, "selftest", "work", {"ms": "soon", "extra": True}),
        "unknown_type": task_message(names, "selftest", "launch_rockets", {}),
        "no_type": Outgoing(exchange=names.tasks, routing_key="selftest", body=b"{}"),
        "oversized": task_message(names, "selftest", "work", {"pad": "x" * 5000}),
    }
    good = []
    for message in bad.values():
        rig.producer.publish_message(message)
        good.append(rig.producer.publish("selftest", "work", {"ms": 1}))

    report = rig.account([m.message_id for m in bad.values()] + good, timeout=30)

    assert (report.completed, report.dead_lettered, report.lost) == (6, 6, 0)
    reasons = {name: rig.ledger.dead[m.message_id].reason for name, m in bad.items()}
    assert reasons == {
        "malformed_json": "malformed_body",
        "not_utf8": "malformed_body",
        "wrong_schema": "schema_violation",
        "unknown_type": "unknown_task",
        "no_type": "unknown_task",
        "oversized": "oversized_body",
    }
    assert "ms: Input should be a valid integer" in rig.ledger.dead[bad["wrong_schema"].message_id].error_message
    assert worker.alive()
    assert "Traceback" not in worker.log()


def test_an_unroutable_event_is_never_dropped_silently(rig) -> None:
    pool = "tests.support.pools:orphan"  # emits an event that no queue is bound for
    rig.apply_topology(pool)
    rig.worker(pool=pool)
    rig.ledger = Ledger.for_pool(rig.settings, pool="orphan", subscription=None)
    task = rig.producer.publish("orphan", "work", {})

    report = rig.account([task], timeout=30)

    # Never acked as done: retried (the subscriber may come back), then dead-lettered with the error.
    assert report.reasons == {"retries_exhausted": 1}
    assert rig.ledger.dead[task].error_class == "Unroutable"


def test_request_reply_returns_the_handlers_result(rig) -> None:
    rig.apply_topology()
    rig.worker()
    reply = rig.producer.request("selftest", "work", {"ms": 5}, timeout=10)
    assert reply["attempt"] == 1 and reply["redelivered"] is False


def test_request_reply_times_out_cleanly_without_a_worker(rig) -> None:
    rig.apply_topology()
    with pytest.raises(RequestTimeout, match=re.escape("no reply to work within 0.5s")):
        rig.producer.request("selftest", "work", {}, timeout=0.5)


def test_publishing_to_a_pool_nobody_declared_is_refused(rig) -> None:
    rig.apply_topology()
    with pytest.raises(Unroutable):
        rig.producer.publish("no-such-pool", "work", {})


def test_batch_publish_pipelines_confirms_and_reports_refusals(rig) -> None:
    rig.apply_topology()
    names = Names(rig.settings.namespace)
    good = [task_message(names, "selftest", "noop", {"i": i}) for i in range(500)]
    rig.producer.publish_batch(good)
    assert rig.queue_ready(f"{names.namespace}.selftest") == 500

    mixed = [task_message(names, "selftest", "noop", {}), task_message(names, "nowhere", "noop", {})]
    with pytest.raises(PublishRefused, match=r"1 of 2 messages refused: .*\(unroutable\)"):
        rig.producer.publish_batch(mixed)


def test_topology_apply_is_idempotent_and_reports_conflicts(rig) -> None:
    rig.apply_topology()
    rig.apply_topology()  # again: no error, nothing changes
    rig.configure(WARREN_DELIVERY_LIMIT="9")  # the same queue, other arguments
    with pytest.raises(TopologyError, match="PRECONDITION_FAILED"):
        rig.apply_topology()


def test_cli_publish_and_topology_exit_codes(rig, broker_env) -> None:
    env = {"PATH": "/usr/bin:/bin", **rig.env}

    def warren(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "warren", *args], env=env, capture_output=True, text=True)

    applied = warren("topology", "apply", "selftest")
    assert applied.returncode == 0, applied.stderr
    published = warren("publish", "selftest", "work", '{"ms": 1}', "--id", "order-42")
    assert (published.returncode, published.stdout.strip()) == (0, "order-42")
    refused = warren("publish", "nowhere", "work", "{}")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"warren: publishing to {rig.settings.namespace}.tasks/nowhere: no queue is bound for this message"
    )
    conflict = subprocess.run(
        [sys.executable, "-m", "warren", "topology", "apply", "selftest"],
        env={**env, "WARREN_QUEUE_TYPE": "classic"}, capture_output=True, text=True,
    )
    assert conflict.returncode == 3
    assert "topology conflict" in conflict.stderr and "guest" not in conflict.stderr
