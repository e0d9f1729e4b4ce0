"""The Celery consumer of ``bench.latency``: ``celery -A bench._celery_latency worker ...``.

The app of ``bench._celery_app`` (quorum queue, ``task_acks_late``, no result backend) with one
more task, ``bench.latency_noop``, whose first act is to record its start in the record file named
by ``BENCH_CELERY_LEDGER`` (``bench._latency_record`` lines; every pool process appends to it).
With ``task_acks_late`` the worker's main process acks once the pool process reports the task
done; the ack time is recorded right after kombu's ``Message.ack`` has sent the frame (patched in
the main process at ``worker_init``).

The publisher does not go through Celery: ``task_message`` builds Celery's protocol-2 message
(headers, body) with the app's own ``as_task_v2`` so the same paced raw pika publisher, with
confirms, feeds Warren, raw pika and Celery alike.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pika
from celery import signals
from kombu.message import Message

from bench import _celery_app
from bench._latency_record import Recorder

TASK_NAME = "bench.latency_noop"

_recorder = Recorder(os.environ.get("BENCH_CELERY_LEDGER"))
app = _celery_app.make_app(
    os.environ.get("BENCH_BROKER_URL", "amqp://localhost"), os.environ.get("BENCH_CELERY_QUEUE", "bench")
)


@app.task(name=TASK_NAME, bind=True)
def latency_noop(self: Any) -> None:
    _recorder.started(self.request.id)


@signals.worker_init.connect
def _time_acks(**_kwargs: Any) -> None:
    ack = Message.ack

    def timed_ack(message: Message, multiple: bool = False) -> None:
        ack(message, multiple=multiple)
        task_id = (message.headers or {}).get("id")
        if task_id:
            _recorder.acked(task_id)

    Message.ack = timed_ack  # type: ignore[method-assign]


def task_message(task_id: str) -> tuple[bytes, pika.BasicProperties]:
    """Body and properties of the protocol-2 message ``send_task(TASK_NAME, task_id=task_id)``
    would publish (pika cannot encode a null header, so headers whose value is None are left out:
    Celery reads every one of them with a default)."""
    message = app.amqp.as_task_v2(task_id, TASK_NAME, args=(), kwargs={})
    headers = {k: v for k, v in message.headers.items() if v is not None and k != "timelimit"}
    properties = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=pika.DeliveryMode.Persistent,
        correlation_id=task_id,
        priority=0,
        headers=headers,
    )
    return json.dumps(message.body).encode(), properties
