"""Parent-side broker chores with plain pika: wait for a consumer, check a queue drained, clean up."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator

import pika
from pika.adapters.blocking_connection import BlockingChannel

from bench._children import CaseFailed, Child

_POLL_S = 0.05


@contextlib.contextmanager
def channel(url: str) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def queue_state(url: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of an existing queue, from a passive declare."""
    with channel(url) as ch:
        ok = ch.queue_declare(queue, passive=True).method
    return ok.message_count, ok.consumer_count


def wait_for_consumer(url: str, queue: str, child: Child, timeout: float = 60.0) -> None:
    """Return once ``queue`` (which must exist) has a consumer; fail if ``child`` dies or is slow."""
    deadline = time.monotonic() + timeout
    with channel(url) as ch:
        while ch.queue_declare(queue, passive=True).method.consumer_count < 1:
            child.check_running()
            if time.monotonic() > deadline:
                raise CaseFailed(f"{child.name} not consuming {queue} after {timeout:.0f}s\n{child.log_tail()}")
            time.sleep(_POLL_S)


def ensure_drained(url: str, queue: str, expected_acks: int) -> None:
    """After the consumer has gone, any unacked message is ready again: there must be none."""
    ready, _ = queue_state(url, queue)
    if ready:
        raise CaseFailed(f"{ready} of {expected_acks} messages were left in {queue} (not acked)")


def delete(url: str, *, queues: Iterable[str] = (), exchanges: Iterable[str] = ()) -> None:
    """Delete queues and exchanges, ignoring those already gone."""
    with channel(url) as ch:
        for name in queues:
            ch.queue_delete(name)
        for name in exchanges:
            ch.exchange_delete(name)
