"""The benchmark cases. Each one runs alone, on fresh queues it deletes afterwards.

End-to-end cases start a consumer process, wait until it consumes, then publish N messages with
confirms from this process while it consumes: the time runs from just before the first publish
(connection set-up included, alike for every case) to the N-th ack. Timestamps are
``time.monotonic()``, which is one system-wide clock on Linux, so they compare across processes.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import _amqp, _pika_publisher
from bench._celery_app import LEDGER_LINE, TASK_NAME, make_app
from bench._children import CaseFailed, Child
from warren import topology
from warren.broker import Session
from warren.config import Settings
from warren.producer import Producer, task_message
from warren.topology import Names
from warren.worker.pool import Pool, load_pool

POOL = "selftest"
TASK = "noop"
CASE_TIMEOUT_S = 300.0
CELERY_CONCURRENCY = 2


@dataclass(frozen=True)
class Env:
    """What every case needs: the broker, where children log, the confirm window."""

    url: str
    logs: Path
    window: int


@dataclass(frozen=True)
class Measurement:
    """One run of one case: N messages, first publish -> N-th ack (or last confirm)."""

    messages: int
    seconds: float
    publish_seconds: float  # until the last publish was confirmed (or sent, for Celery)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


# -- Warren's topology, shared by the Warren and raw pika cases ------------------------------------
def _settings(env: Env, namespace: str, prefetch: int = 1) -> Settings:
    return Settings(_env_file=None, broker_url=env.url, namespace=namespace, prefetch=prefetch)


def _pool_topology(settings: Settings, pool: Pool) -> topology.Topology:
    """Exactly what ``Worker`` declares for ``pool``."""
    return topology.build(settings, pools=[pool.spec])


@contextmanager
def _warren_queue(env: Env, prefetch: int = 1, pool: str = POOL) -> Iterator[tuple[Settings, str]]:
    """A fresh namespace with the topology of ``pool`` (a pool name or ``module:attribute``; the
    selftest pool by default) applied; (settings, work queue)."""
    settings = _settings(env, f"bench{secrets.token_hex(3)}", prefetch)
    spec = load_pool(pool)
    topo = _pool_topology(settings, spec)
    session = Session.open(settings, name="bench-setup")
    try:
        topology.apply(session, topo)
    finally:
        session.close()
    try:
        yield settings, Names(settings.namespace).queue(spec.name)
    finally:
        _amqp.delete(env.url, queues=[q.name for q in topo.queues], exchanges=[e.name for e in topo.exchanges])


def _message_ids(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


# -- end to end -----------------------------------------------------------------------------------
def warren_worker(env: Env, prefetch: int, count: int, *, metrics: bool = False) -> Measurement:
    """The real Worker (own process) consuming what ``Producer.publish_batch`` publishes; with
    ``metrics``, serving its Prometheus metrics, scraped once a second meanwhile, as Prometheus would
    (more often than its usual 15-30 s)."""
    with _warren_queue(env, prefetch) as (settings, queue):
        argv = ["--url", env.url, "--namespace", settings.namespace, "--prefetch", str(prefetch), "--count", str(count)]
        port = _free_port() if metrics else None
        if port is not None:
            argv += ["--metrics-port", str(port)]
        name = "warren-worker-metrics" if metrics else "warren-worker"
        log = env.logs / f"{name}-p{prefetch}.log"
        child = Child.python_module("warren worker", "bench._warren_consumer", *argv, log_path=log, json_stdout=True)
        with child, _scraping(port):
            _amqp.wait_for_consumer(env.url, queue, child)
            names = Names(settings.namespace)
            messages = [task_message(names, POOL, TASK, {}) for _ in range(count)]
            with Producer(settings, name="bench-producer") as producer:
                started = time.monotonic()
                producer.publish_batch(messages, window=env.window)
                published = time.monotonic()
            report = child.result(CASE_TIMEOUT_S)
        _amqp.ensure_drained(env.url, queue, count)
    return Measurement(count, report["done_at"] - started, published - started)


def warren_worker_with_metrics(env: Env, prefetch: int, count: int) -> Measurement:
    return warren_worker(env, prefetch, count, metrics=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _scraping(port: int | None) -> Iterator[list[int]]:
    """Scrape http://127.0.0.1:port/metrics once a second from a thread until the block ends; the
    list holds the sizes of the pages read."""
    pages: list[int] = []
    if port is None:
        yield pages
        return
    stop = threading.Event()

    def scrape() -> None:
        while not stop.wait(1.0):
            with contextlib.suppress(OSError):  # not serving yet
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    pages.append(len(response.read()))

    thread = threading.Thread(target=scrape, name="bench-scraper", daemon=True)
    thread.start()
    try:
        yield pages
    finally:
        stop.set()
        thread.join(timeout=10)


def pika_worker(env: Env, prefetch: int, count: int) -> Measurement:
    """A raw pika consumer (own process) consuming what the raw pipelined publisher publishes."""
    with _warren_queue(env) as (settings, queue):
        argv = ["--url", env.url, "--queue", queue, "--prefetch", str(prefetch), "--count", str(count)]
        log = env.logs / f"pika-worker-p{prefetch}.log"
        child = Child.python_module("raw pika consumer", "bench._pika_consumer", *argv, log_path=log, json_stdout=True)
        with child:
            _amqp.wait_for_consumer(env.url, queue, child)
            ids = _message_ids(count)
            started = time.monotonic()
            _pika_publisher.publish(env.url, Names(settings.namespace).tasks, POOL, ids, window=env.window)
            published = time.monotonic()
            report = child.result(CASE_TIMEOUT_S)
        _amqp.ensure_drained(env.url, queue, count)
    return Measurement(count, report["done_at"] - started, published - started)


def celery_worker(env: Env, prefetch: int, count: int) -> Measurement:
    """``celery worker --pool prefork --concurrency 2 --prefetch-multiplier P`` fed by ``send_task``."""
    queue = f"bench{secrets.token_hex(3)}.celery"
    ledger = env.logs / f"celery-p{prefetch}.ledger"
    ledger.unlink(missing_ok=True)
    app = make_app(env.url, queue)
    try:
        with app.connection_for_write() as connection:
            app.amqp.queues[queue](connection.default_channel).declare()
        with _celery_child(env, queue, ledger, prefetch) as child:
            _amqp.wait_for_consumer(env.url, queue, child, timeout=120)
            started = time.monotonic()
            for _ in range(count):
                app.send_task(TASK_NAME)
            published = time.monotonic()
            done_at = _wait_for_ledger(ledger, count, child)
        _amqp.ensure_drained(env.url, queue, count)
    finally:
        app.close()
        _amqp.delete(env.url, queues=[queue], exchanges=[queue])
    return Measurement(count, done_at - started, published - started)


def _celery_child(
    env: Env, queue: str, ledger: Path, prefetch: int, *, app: str = "bench._celery_app", log_name: str = "celery"
) -> Child:
    """The Celery worker of ``app`` (a module whose ``app`` reads the ``BENCH_*`` variables)."""
    argv = [
        "-A", app, "worker", "--pool", "prefork",
        "--concurrency", str(CELERY_CONCURRENCY), "--prefetch-multiplier", str(prefetch),
        "--queues", queue, "--loglevel", "WARNING", "--hostname", f"{queue}@localhost",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]
    return Child.python_module(
        "celery worker", "celery", *argv,
        log_path=env.logs / f"{log_name}-p{prefetch}.log",
        env={"BENCH_BROKER_URL": env.url, "BENCH_CELERY_QUEUE": queue, "BENCH_CELERY_LEDGER": str(ledger)},
    )


def _wait_for_ledger(ledger: Path, count: int, child: Child) -> float:
    """When the N-th task returned (Celery acks it right after, from its main process)."""
    deadline = time.monotonic() + CASE_TIMEOUT_S
    while not ledger.exists() or ledger.stat().st_size < count * LEDGER_LINE:
        child.check_running()
        if time.monotonic() > deadline:
            raise CaseFailed(f"celery finished fewer than {count} tasks in {CASE_TIMEOUT_S:.0f}s\n{child.log_tail()}")
        time.sleep(0.01)
    return max(float(line) for line in ledger.read_text().split())


# -- batch publishing -----------------------------------------------------------------------------
def warren_batch(env: Env, count: int) -> Measurement:
    """``Producer.publish_batch``: persistent, mandatory, pipelined confirms; no consumer."""
    with _warren_queue(env) as (settings, _queue):
        messages = [task_message(Names(settings.namespace), POOL, TASK, {}) for _ in range(count)]
        with Producer(settings, name="bench-producer") as producer:
            started = time.monotonic()
            producer.publish_batch(messages, window=env.window)
            seconds = time.monotonic() - started
    return Measurement(count, seconds, seconds)


def pika_batch(env: Env, count: int) -> Measurement:
    """Raw pika pipelined confirms with the same window, to the same kind of queue; no consumer."""
    with _warren_queue(env) as (settings, _queue):
        ids = _message_ids(count)
        started = time.monotonic()
        _pika_publisher.publish(env.url, Names(settings.namespace).tasks, POOL, ids, window=env.window)
        seconds = time.monotonic() - started
    return Measurement(count, seconds, seconds)
