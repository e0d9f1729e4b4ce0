"""The consume loop: one connection, handlers on a thread pool, acks on the I/O thread.

The main thread owns the connection and keeps calling ``Session.run`` so heartbeats flow however
long a handler takes. Each delivery goes to a thread pool as big as the prefetch, so every message
the broker has handed us is being worked on: a graceful stop finishes all of them. A finished task
comes back through a queue; the I/O thread publishes its follow-ups with confirms and only then
acks. Results from before a reconnect are dropped, not acked: their delivery tags died with the
channel and the broker redelivers those messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from warren import topology
from warren.broker import Session
from warren.config import Settings
from warren.errors import BrokerUnavailable, PublishRefused
from warren.messages import Delivery
from warren.worker.deadletter import Reason
from warren.worker.decision import Action, Complete, DeadLetter, Defer, Failed, Retry, decide
from warren.worker.handling import Processor, Result
from warren.worker.pool import Pool

log = logging.getLogger("warren.worker")

EXIT_OK = 0
EXIT_ABANDONED = 1  # the grace period ran out with tasks in flight (the broker redelivers them)
EXIT_SECOND_SIGNAL = 130


@dataclass
class Stats:
    completed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dropped_after_reconnect: int = 0
    connections: int = 0

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in vars(self).items())


@dataclass
class _Flight:
    generation: int
    in_flight: dict[int, float] = field(default_factory=dict)  # delivery tag -> start time


def backoff_delays(initial: float, cap: float, *, rng: random.Random | None = None) -> Iterator[float]:
    """Capped exponential backoff with jitter: the n-th delay is drawn from
    [initial / 2, min(cap, initial * 2**n)], so a fleet of workers does not reconnect in step."""
    rng = rng or random.Random()
    n = 0
    while True:
        yield rng.uniform(initial / 2, min(cap, initial * 2**n))
        n = min(n + 1, 30)


class HealthFile:
    """A file that exists while the worker consumes, refreshed so its age shows the loop is alive."""

    REFRESH_SECONDS = 5.0

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._touched = 0.0

    def ready(self) -> None:
        if self.path is not None:
            self.path.write_text(f"{os.getpid()}\n")
            self._touched = time.monotonic()

    def alive(self) -> None:
        if self.path is not None and time.monotonic() - self._touched >= self.REFRESH_SECONDS:
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)
            self._touched = time.monotonic()

    def not_ready(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class Worker:
    def __init__(self, pool: Pool, settings: Settings, *, name: str | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.name = name or settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self.topology = topology.build(settings, pools=[pool.spec])
        self.processor = Processor.for_settings(pool, settings, worker=self.name)
        self.names = self.processor.names
        self.pool_names = self.processor.pool_names
        self.policy = self.processor.policy
        self.stats = Stats()
        self._results: queue.SimpleQueue[tuple[int, Result]] = queue.SimpleQueue()
        self._wakeup_pending = threading.Event()
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=settings.prefetch, thread_name_prefix="task")
        self._flight = _Flight(generation=0)
        self._session: Session | None = None
        self._health = HealthFile(settings.health_file)

    # -- signals ------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping:
            log.warning("second %s: exiting now; unacked messages go back to the queue",
                        signal.Signals(signum).name)
            os._exit(EXIT_SECOND_SIGNAL)
        log.info("%s: draining %d task(s) in flight, grace %.0fs",
                 signal.Signals(signum).name, len(self._flight.in_flight), self.settings.shutdown_grace)
        self.stop()

    def stop(self) -> None:
        """Ask the loop to stop taking messages and drain; safe from the main thread."""
        self._stopping = True

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        delays = backoff_delays(self.settings.reconnect_initial_delay, self.settings.reconnect_max_delay)
        try:
            while True:
                connections = self.stats.connections
                try:
                    return self._serve()
                except BrokerUnavailable as e:
                    self._lost_connection(e)
                if self.stats.connections > connections:  # it did connect: a new outage starts over
                    delays = backoff_delays(self.settings.reconnect_initial_delay, self.settings.reconnect_max_delay)
                if self._stopping:
                    log.info("stopping while disconnected: the broker requeues whatever was unacked")
                    return EXIT_OK
                delay = next(delays)
                log.info("reconnecting in %.2fs", delay)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not self._stopping:
                    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            log.info("worker %s stopped: %s", self.name, self.stats.line())

    def _serve(self) -> int:
        session = Session.open(self.settings, name=self.name)
        self._session = session
        self.stats.connections += 1
        try:
            topology.apply(session, self.topology)
            self._flight = _Flight(generation=self._flight.generation + 1)
            if self._stopping:
                return EXIT_OK
            session.consume(self.pool_names.queue, prefetch=self.settings.prefetch, on_delivery=self._dispatch)
            log.info("worker %s consuming %s (prefetch %d)", self.name, self.pool_names.queue, self.settings.prefetch)
            self._health.ready()
            drain_deadline: float | None = None
            while True:
                session.run(0.2)
                self._settle_results()
                self._health.alive()
                if self._stopping:
                    if drain_deadline is None:
                        session.cancel()
                        drain_deadline = time.monotonic() + self.settings.shutdown_grace
                    if not self._flight.in_flight:
                        return EXIT_OK
                    if time.monotonic() >= drain_deadline:
                        log.error("grace period over with %d task(s) in flight; they will be redelivered",
                                  len(self._flight.in_flight))
                        return EXIT_ABANDONED
        finally:
            self._health.not_ready()
            self._session = None
            session.close()

    def _lost_connection(self, error: BrokerUnavailable) -> None:
        dropped = len(self._flight.in_flight)
        log.warning("broker connection lost: %s; %d task(s) in flight will be redelivered", error, dropped)
        self._flight = _Flight(generation=self._flight.generation + 1)

    # -- deliveries ---------------------------------------------------------------------------
    def _dispatch(self, delivery: Delivery) -> None:
        flight = self._flight
        flight.in_flight[delivery.delivery_tag] = time.monotonic()
        self._executor.submit(self._work, flight.generation, delivery)

    def _work(self, generation: int, delivery: Delivery) -> None:
        try:
            result = self.processor.handle(delivery)
        except BaseException:  # a bug in Warren itself: never lose the message, let the broker redeliver
            log.exception("internal error handling %s; leaving it unacked", delivery.message_id)
            return
        self._results.put((generation, result))
        session = self._session
        if session is not None and not self._wakeup_pending.is_set():
            self._wakeup_pending.set()
            # the I/O thread will find the connection gone on its own
            with contextlib.suppress(BrokerUnavailable):
                session.call_soon_threadsafe(self._wakeup_pending.clear)

    def _settle_results(self) -> None:
        """Settle every finished task: follow-ups confirmed first, then acks, coalesced."""
        settled: list[tuple[Result, Action]] = []
        while True:
            try:
                generation, result = self._results.get_nowait()
            except queue.Empty:
                break
            if generation != self._flight.generation:
                self.stats.dropped_after_reconnect += 1
                log.info("dropping result of %s from a lost connection; the broker redelivers it",
                         result.delivery.message_id)
                continue
            action = self._publish_follow_ups(result)
            if action is not None:
                settled.append((result, action))
        if settled:
            self._ack([result.delivery.delivery_tag for result, _ in settled])
            for result, action in settled:
                self._finish(result, action)

    def _publish_follow_ups(self, result: Result) -> Action | None:
        """Publish a task's follow-ups with confirms; the action to ack it as, or None if it was
        rejected into the dead-letter exchange because even the fallback publish was refused."""
        session = self._session
        assert session is not None
        try:
            for message in result.publishes:
                session.publish(message)
            if result.reply is not None:
                # Confirmed but not mandatory (see Session.publish): a caller that has gone after
                # its timeout loses only a reply it no longer waits for.
                session.publish(result.reply, mandatory=False)
            return result.action
        except PublishRefused as e:
            # A refused follow-up (no queue bound, queue full) counts as a failed attempt, so the
            # task is retried or dead-lettered with this error: never acked as if all went well.
            log.error("follow-up publish for %s refused: %s", result.delivery.message_id, e)
            action = decide(Failed(type(e).__name__, str(e)), attempt=result.attempt, policy=self.policy)
            try:
                for message in self.processor.follow_ups(result.delivery, action)[0]:
                    session.publish(message)
                return action
            except PublishRefused as again:
                log.error("fallback publish refused too (%s); rejecting into the queue's dead-letter exchange", again)
                session.reject(result.delivery.delivery_tag)
                self._flight.in_flight.pop(result.delivery.delivery_tag, None)
                self._finish(result, DeadLetter(Reason.REJECTED, type(again).__name__, str(again), result.attempt))
                return None

    def _ack(self, tags: list[int]) -> None:
        """Ack ``tags``: one ``multiple`` ack for those below the oldest task still running (every
        tag below it is settled), single acks for the rest. Per-message acks cost the I/O thread a
        socket flush each and the quorum queue a settle command each."""
        in_flight = self._flight.in_flight
        for tag in tags:
            in_flight.pop(tag, None)
        oldest_running = next(iter(in_flight), None)  # dispatch order is delivery-tag order
        below = [t for t in tags if oldest_running is None or t < oldest_running]
        session = self._session
        assert session is not None
        if below:
            session.ack(max(below), multiple=True)
        for tag in tags:
            if oldest_running is not None and tag > oldest_running:
                session.ack(tag)

    def _finish(self, result: Result, action: Action) -> None:
        outcome = {Complete: "completed", Retry: "retry", DeadLetter: "dead-lettered", Defer: "deferred"}[type(action)]
        if isinstance(action, Complete):
            self.stats.completed += 1
        elif isinstance(action, Retry):
            self.stats.retried += 1
        elif isinstance(action, DeadLetter):
            self.stats.dead_lettered += 1
        detail = ""
        if isinstance(action, Retry):
            detail = f" delay_ms={action.delay_ms} error={action.error_class}"
        elif isinstance(action, DeadLetter):
            detail = f" reason={action.reason} error={action.error_class}"
        elif isinstance(action, Defer):
            detail = f" due_in_ms={action.remaining_ms}"
        log.info(
            "message id=%s queue=%s task=%s attempt=%d redelivered=%s outcome=%s duration_ms=%.1f%s",
            result.delivery.message_id, self.pool_names.queue, result.task_type, result.attempt,
            result.delivery.redelivered, outcome, result.seconds * 1000, detail,
        )
