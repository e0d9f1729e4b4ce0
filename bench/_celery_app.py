"""The Celery side of the benchmark: a no-op task on a quorum queue, acks late, no result backend.

The worker is started as ``celery -A bench._celery_app worker ...`` and configured from
``BENCH_BROKER_URL``, ``BENCH_CELERY_QUEUE`` and ``BENCH_CELERY_LEDGER``. Each task appends its
completion time (``time.monotonic()``, fixed width) to the ledger file with one ``O_APPEND`` write,
so the benchmark can count completions across the pool processes and know when the N-th one ended.
The publisher builds its own app with ``make_app`` (Celery's default: publishing without confirms).
"""

from __future__ import annotations

import os
import time

from celery import Celery
from kombu import Exchange, Queue

TASK_NAME = "bench.noop"
LEDGER_LINE = 21  # bytes per ledger line: "%020.6f\n"

_ledger: tuple[int, int] | None = None  # (pid, fd) of this process's ledger file


def make_app(broker_url: str, queue: str) -> Celery:
    app = Celery("warren-bench", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_ignore_result=True,
        result_backend=None,
        task_queues=[
            Queue(queue, Exchange(queue, type="direct"), routing_key=queue, queue_arguments={"x-queue-type": "quorum"})
        ],
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        worker_detect_quorum_queues=True,  # per-consumer QoS: quorum queues refuse global QoS
        broker_connection_retry_on_startup=True,
    )
    app.task(name=TASK_NAME)(noop)
    return app


def noop() -> None:
    """Does nothing but record that it ran (one small append)."""
    os.write(_ledger_fd(), b"%020.6f\n" % time.monotonic())


def _ledger_fd() -> int:
    global _ledger
    if _ledger is None or _ledger[0] != os.getpid():
        fd = os.open(os.environ["BENCH_CELERY_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _ledger = (os.getpid(), fd)
    return _ledger[1]


app = make_app(os.environ.get("BENCH_BROKER_URL", "amqp://localhost"), os.environ.get("BENCH_CELERY_QUEUE", "bench"))
