"""Runs the real Warren worker until it has completed N tasks: ``python -m bench._warren_consumer``.

The ``selftest`` pool's ``noop`` task, with the given prefetch and namespace. The Worker runs on the
main thread as in production; a monitor thread polls ``worker.stats.completed`` (a task counts as
completed once its ack is sent), records when it reaches N and calls ``worker.stop()``. Prints
``{"done_at": <time.monotonic()>, "completed": ..., "exit_code": ...}`` on exit.

Logging is at WARNING (per-message INFO lines off), as a worker benchmark without log shipping.
``--metrics-port`` serves the worker's Prometheus metrics, as ``WARREN_METRICS_PORT`` does.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time

from warren import metrics
from warren.config import Settings
from warren.worker.pool import load_pool
from warren.worker.runtime import Worker

POLL_S = 0.005  # resolution of the N-th-ack timestamp


class _Monitor:
    def __init__(self, worker: Worker, count: int) -> None:
        self.worker = worker
        self.count = count
        self.done_at: float | None = None
        self.thread = threading.Thread(target=self._watch, name="bench-monitor", daemon=True)

    def _watch(self) -> None:
        while self.worker.stats.completed < self.count:
            time.sleep(POLL_S)
        self.done_at = time.monotonic()
        self.worker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._warren_consumer")
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--prefetch", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings(_env_file=None, broker_url=args.url, namespace=args.namespace, prefetch=args.prefetch,
                        metrics_port=args.metrics_port)
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port, address="127.0.0.1")
    worker = Worker(load_pool("selftest"), settings, name=f"bench-{args.namespace}")
    monitor = _Monitor(worker, args.count)
    monitor.thread.start()
    exit_code = worker.run()
    print(json.dumps({"done_at": monitor.done_at, "completed": worker.stats.completed, "exit_code": exit_code}),
          flush=True)
    return 0 if exit_code == 0 and monitor.done_at is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
