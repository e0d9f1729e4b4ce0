"""The Warren and raw pika consumers of ``bench.latency``, until SIGTERM:
``python -m bench._latency_consumer warren|pika --records FILE ...``.

Both write ``bench._latency_record`` lines: ``s`` as the first thing the handler does, ``a`` once
the ack has been handed to the socket.

- ``warren``: the real ``Worker`` (main thread, as in production) serving the ``latency`` pool
  below, whose ``noop`` task records its start. The ack time is taken by a subclass that overrides
  ``Worker._finish``, which the I/O thread calls for each settled task right after the acks of that
  batch were sent (pika's ``basic_ack`` writes the frame before it returns): nothing on Warren's
  own path between delivery and ack changes. SIGTERM drains it as in production.
- ``pika``: BlockingConnection, ``basic_qos(prefetch)``, ``basic_consume``; the callback records
  its start, acks, records the ack: the least any consumer can do.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import pika

from bench._latency_record import Recorder
from warren import Pool, TaskContext
from warren.config import Settings
from warren.worker.decision import Action, Complete
from warren.worker.handling import Result
from warren.worker.runtime import Worker

POOL_NAME = "latency"
TASK = "noop"

pool = Pool(POOL_NAME, description="bench.latency: a task that records when it starts")
_recorder = Recorder(None)  # the file is set by main(); the parent imports this module for the pool only


@pool.task(TASK, schema=None)
def noop(payload: object, ctx: TaskContext) -> None:
    _recorder.started(ctx.task_id)


class TimedWorker(Worker):
    """``Worker`` recording when each task's ack was sent (see the module docstring)."""

    def _finish(self, result: Result, action: Action) -> None:
        if result.delivery.message_id:
            _recorder.acked(result.delivery.message_id)
        if not isinstance(action, Complete):
            logging.getLogger("bench").warning("%s was not completed: %s", result.delivery.message_id, action)
        super()._finish(result, action)


def run_warren(args: argparse.Namespace) -> int:
    if not callable(getattr(Worker, "_finish", None)):
        raise SystemExit("warren.worker.runtime.Worker has no _finish any more: update bench/_latency_consumer.py")
    settings = Settings(_env_file=None, broker_url=args.url, namespace=args.namespace, prefetch=args.prefetch)
    worker = TimedWorker(pool, settings, name=f"bench-latency-{args.namespace}")
    worker.install_signal_handlers()
    exit_code = worker.run()
    print(f"warren worker exited {exit_code}: {worker.stats.line()}", file=sys.stderr, flush=True)
    return exit_code


def run_pika(args: argparse.Namespace) -> int:
    def on_message(channel: Any, method: Any, properties: pika.BasicProperties, _body: bytes) -> None:
        _recorder.started(properties.message_id)
        channel.basic_ack(method.delivery_tag)
        _recorder.acked(properties.message_id)

    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=args.prefetch)
    channel.basic_consume(args.queue, on_message, auto_ack=False)
    channel.start_consuming()  # until SIGTERM ends the process
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._latency_consumer")
    parser.add_argument("kind", choices=("warren", "pika"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--records", required=True, help="the record file to append to")
    parser.add_argument("--prefetch", type=int, required=True)
    parser.add_argument("--namespace", help="warren: the namespace whose latency pool to serve")
    parser.add_argument("--queue", help="pika: the queue to consume")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    _recorder.path = args.records
    return run_warren(args) if args.kind == "warren" else run_pika(args)


if __name__ == "__main__":
    raise SystemExit(main())
