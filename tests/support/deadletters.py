"""Dead letters made for real, and reading queues without taking from them.

A selftest worker that refuses every body over 5 bytes dead-letters `work` tasks as
`oversized_body`; a normal worker completes the same tasks once they are replayed.
"""

from __future__ import annotations

import time
from typing import Any

from warren.broker import Session
from warren.topology import Names


def dead_lettered(rig: Any, count: int, **task: Any) -> list[str]:
    """The ids of ``count`` selftest `work` tasks dead-lettered as oversized by a strict worker
    (stopped after)."""
    rig.apply_topology()
    strict = rig.worker("strict", WARREN_MAX_BODY_BYTES="5")
    ids = [rig.producer.publish("selftest", "work", {"ms": 1, **task}) for _ in range(count)]
    wait_for_depth(rig, dlq(rig), count)
    strict.stop()
    return ids


def dlq(rig: Any) -> str:
    return Names(rig.settings.namespace).pool("selftest", ()).dead_letter_queue


def wait_for_depth(rig: Any, queue: str, count: int, *, timeout: float = 30) -> None:
    """Poll until ``queue`` holds at least ``count`` ready messages."""
    deadline = time.monotonic() + timeout
    while (ready := rig.queue_ready(queue)) < count:
        assert time.monotonic() < deadline, f"{queue}: {ready} of {count} messages within {timeout}s"
        time.sleep(0.05)


def ids_in(rig: Any, queue: str) -> list[str]:
    """The message ids in ``queue``, in order, read and given back."""
    session = Session.open(rig.settings, name="test-read")
    try:
        found = []
        while (d := session.get(queue)) is not None:
            found.append(d.message_id)
        session.requeue_unacked()
        return found
    finally:
        session.close()
