"""Prometheus metrics of a Warren process: what its worker handled, how, and how fast the broker confirmed.

Off unless ``WARREN_METRICS_PORT`` is set: then ``serve`` exposes ``REGISTRY`` on that port
(``/metrics``), ``publish_timer`` starts timing confirms, and workers record through a
``PoolMetrics``. Off, nothing is recorded, so the hot path pays nothing.

Label values come from the code, never from message contents: a task type the pool does not know
is counted as ``unknown``, so a flood of made-up types cannot create series without bound. Every
series lives on the module's own ``REGISTRY``; the shop's API adds its request metrics there too.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_CONFIRM_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

TASKS = Counter("warren_tasks", "Deliveries settled, by pool, task type and outcome (completed, retry, "
                "dead_lettered, deferred, isolated).", ("pool", "task", "outcome"), registry=REGISTRY)
TASK_SECONDS = Histogram("warren_task_duration_seconds", "Time to handle one delivery: validation, the handler "
                         "and the decision.", ("pool", "task"), buckets=_SECONDS, registry=REGISTRY)
IN_FLIGHT = Gauge("warren_tasks_in_flight", "Deliveries being handled or waiting for their ack.", ("pool",),
                  registry=REGISTRY)
RETRIES = Counter("warren_retries", "Failed attempts sent to a delay queue for a retry, by error class.",
                  ("pool", "task", "error_class"), registry=REGISTRY)
DEAD_LETTERS = Counter("warren_dead_letters", "Messages dead-lettered, by reason.", ("pool", "task", "reason"),
                       registry=REGISTRY)
RECONNECTS = Counter("warren_reconnects", "Connections to the broker after the first (each one after a loss).",
                     ("pool",), registry=REGISTRY)
CONSUMING = Gauge("warren_worker_consuming", "1 while the worker consumes its queues, 0 while it (re)connects.",
                  ("pool",), registry=REGISTRY)
TASK_WAIT = Gauge("warren_task_wait_seconds", "Time from publish to handling of the last first-attempt task "
                  "(the AMQP timestamp, to the second): how long tasks wait in the queue.", ("pool",),
                  registry=REGISTRY)
CONFIRM_SECONDS = Histogram("warren_publish_confirm_seconds", "Time from publish to the broker's confirm.",
                            buckets=_CONFIRM_SECONDS, registry=REGISTRY)

_enabled = False


def serve(port: int, *, address: str = "0.0.0.0") -> WSGIServer:
    """Serve ``REGISTRY`` at http://address:port/metrics from a daemon thread, and start timing
    confirms. Port 0 takes any free port (``server.server_port`` says which)."""
    global _enabled
    server, _thread = start_http_server(port, address, registry=REGISTRY)
    _enabled = True
    return server


def publish_timer() -> Histogram | None:
    """Where confirm latency goes, or None while metrics are off."""
    return CONFIRM_SECONDS if _enabled else None


class PoolMetrics:
    """A worker's series for one pool, their label children resolved once."""

    def __init__(self, pool: str, tasks: Container[str]) -> None:
        self.pool = pool
        self._tasks = tasks
        self._settled: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._wait = TASK_WAIT.labels(pool)
        self._reconnects = RECONNECTS.labels(pool)
        self._consuming = CONSUMING.labels(pool)
        self._consuming.set(0)

    def task_label(self, task_type: str) -> str:
        if task_type in self._tasks:
            return task_type
        return "*" if "*" in self._tasks else "unknown"

    def settled(self, task_type: str, outcome: str, *, seconds: float) -> None:
        key = (task_type, outcome)
        children = self._settled.get(key)
        if children is None:
            task = self.task_label(task_type)
            children = self._settled[key] = (TASKS.labels(self.pool, task, outcome),
                                             TASK_SECONDS.labels(self.pool, task))
        counter, histogram = children
        counter.inc()
        histogram.observe(seconds)

    def retried(self, task_type: str, error_class: str) -> None:
        RETRIES.labels(self.pool, self.task_label(task_type), error_class).inc()

    def dead_lettered(self, task_type: str, reason: str) -> None:
        DEAD_LETTERS.labels(self.pool, self.task_label(task_type), reason).inc()

    def waited(self, seconds: float) -> None:
        self._wait.set(max(0.0, seconds))

    def reconnected(self) -> None:
        self._reconnects.inc()

    def consuming(self, now: bool) -> None:
        self._consuming.set(1 if now else 0)

    def count_in_flight(self, count: Callable[[], int]) -> None:
        """Read the number in flight when scraped: nothing to keep up to date per delivery."""
        IN_FLIGHT.labels(self.pool).set_function(count)
