"""The operator's Prometheus metrics: what each WorkerAutoscaler saw, decided and failed at.

Every series is labelled with the WorkerAutoscaler's ``namespace`` and ``name`` (the queue's
numbers also with ``queue``), lives on the module's own ``REGISTRY``, and is removed by ``forget``
when its WorkerAutoscaler is deleted. Importing this module opens no port: ``__main__`` calls
``serve``, and tests serve on a free port of their own or read ``REGISTRY``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from warren_operator.stats import QueueStats

REGISTRY = CollectorRegistry()
_AUTOSCALER = ("namespace", "name")
_QUEUE = (*_AUTOSCALER, "queue")


def _gauge(name: str, documentation: str, labels: tuple[str, ...] = _QUEUE) -> Gauge:
    return Gauge(f"warren_autoscaler_{name}", documentation, labels, registry=REGISTRY)


READY = _gauge("ready_messages", "Messages ready in the queue, at the last poll.")
UNACKED = _gauge("unacked_messages", "Messages delivered and not yet acknowledged, at the last poll.")
CONSUMERS = _gauge("consumers", "Consumers of the queue, at the last poll.")
PUBLISH_RATE = _gauge("publish_rate", "Messages published to the queue per second (absent while unknown).")
ACK_RATE = _gauge("ack_rate", "Messages acknowledged per second, all consumers together (absent while unknown).")
CURRENT_REPLICAS = _gauge("current_replicas", "The Deployment's replicas before the last decision.", _AUTOSCALER)
DESIRED_REPLICAS = _gauge("desired_replicas", "The replicas the last decision asked for.", _AUTOSCALER)
SCALE_ACTIONS = Counter("warren_autoscaler_scale_actions", "Changes of the Deployment's replicas.",
                        (*_AUTOSCALER, "direction"), registry=REGISTRY)
POLL_FAILURES = Counter("warren_autoscaler_poll_failures", "Polls that decided nothing; reason: the error's class.",
                        (*_AUTOSCALER, "reason"), registry=REGISTRY)
POLL_SECONDS = Histogram("warren_autoscaler_poll_duration_seconds",
                         "How long a poll took: read the scale and the queue, decide, scale.", _AUTOSCALER,
                         buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=REGISTRY)
_QUEUE_GAUGES = (READY, UNACKED, CONSUMERS, PUBLISH_RATE, ACK_RATE)
_EVERY_METRIC = (*_QUEUE_GAUGES, CURRENT_REPLICAS, DESIRED_REPLICAS, SCALE_ACTIONS, POLL_FAILURES, POLL_SECONDS)


@contextmanager
def polling(namespace: str, name: str) -> Iterator[None]:
    """Time one poll; an exception escaping it counts as a failure named by its class."""
    with POLL_SECONDS.labels(namespace, name).time():
        try:
            yield
        except Exception as e:
            failed(namespace, name, reason=type(e).__name__)
            raise


def failed(namespace: str, name: str, *, reason: str) -> None:
    POLL_FAILURES.labels(namespace, name, reason).inc()


def observed(namespace: str, name: str, *, queue: str, stats: QueueStats) -> None:
    """The queue's numbers; only the current queue's series stay, and an unknown rate has none."""
    for gauge in _QUEUE_GAUGES:
        gauge.remove_by_labels({"namespace": namespace, "name": name})
    labels = (namespace, name, queue)
    READY.labels(*labels).set(stats.ready)
    UNACKED.labels(*labels).set(stats.unacked)
    CONSUMERS.labels(*labels).set(stats.consumers)
    for gauge, rate in ((PUBLISH_RATE, stats.publish_rate), (ACK_RATE, stats.ack_rate)):
        if rate is not None:
            gauge.labels(*labels).set(rate)


def decided(namespace: str, name: str, *, current: int, desired: int) -> None:
    CURRENT_REPLICAS.labels(namespace, name).set(current)
    DESIRED_REPLICAS.labels(namespace, name).set(desired)
    if desired != current:
        SCALE_ACTIONS.labels(namespace, name, "up" if desired > current else "down").inc()


def forget(namespace: str, name: str) -> None:
    """Remove every series of the WorkerAutoscaler: it is gone, its numbers must not linger."""
    for metric in _EVERY_METRIC:
        metric.remove_by_labels({"namespace": namespace, "name": name})


def serve(port: int, *, address: str = "0.0.0.0") -> WSGIServer:
    """Serve ``REGISTRY`` at http://address:port/metrics from a daemon thread (port 0: any free
    port, ``server.server_port`` tells which); ``shutdown()`` stops it."""
    server, _thread = start_http_server(port, address, registry=REGISTRY)
    return server
