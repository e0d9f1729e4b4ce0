"""The consume loop: one connection, handlers on a thread pool, acks on the I/O thread.

The main thread owns the connection and keeps calling ``Session.run`` so heartbeats flow however
long a handler takes. It consumes two queues: the pool's work queue (prefetch N) and its suspect
queue (prefetch 1, one consumer across the pool), each on a channel of its own. Each delivery goes
to a thread pool with a thread per prefetch slot, so every message the broker has handed us is
being worked on: a graceful stop finishes all of them. A finished task comes back through a queue;
the I/O thread publishes its follow-ups with confirms and only then acks.

When the connection or a consuming channel is lost (a broker restart, a consumer the broker
cancels or times out), the worker reconnects and consumes again. A task that completed on the
lost connection still has its follow-ups published, and its id is remembered: when the broker
redelivers it, it is acked without running again. Other results from a lost connection are
dropped: the broker redelivers those messages.

While the broker blocks publishing (a memory or disk alarm), finished tasks wait: nothing is
published or acked, the connection stays up, and the tasks settle when the alarm clears.
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
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from warren import topology
from warren.broker import Session
from warren.config import Settings
from warren.errors import BrokerUnavailable, Nacked, PublishRefused, TopologyError
from warren.messages import Delivery, Outgoing
from warren.metrics import PoolMetrics
from warren.worker.deadletter import Reason
from warren.worker.decision import Action, Complete, DeadLetter, Defer, Failed, Isolate, Retry, decide
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
    isolated: int = 0
    deferred: int = 0
    dropped_after_reconnect: int = 0
    connections: int = 0

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in vars(self).items())


Slot = tuple[int, int]  # (channel, delivery tag): tags are per channel


@dataclass
class _Flight:
    generation: int
    in_flight: dict[Slot, float] = field(default_factory=dict)  # -> start time, in delivery order


STUCK_FACTOR = 3  # a task running this many times the pool's longest task is stuck
CONSUMER_TIMEOUT_MARGIN = 60.0  # seconds added to STUCK_FACTOR x the longest task for the broker
DONE_MEMORY = 10_000  # ids of completed tasks whose ack may have been lost, remembered

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
        """Refresh the file; not called while a task is stuck, so a liveness probe restarts us."""
        if self.path is not None and time.monotonic() - self._touched >= self.REFRESH_SECONDS:
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)
            self._touched = time.monotonic()

    def not_ready(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class Worker:
    def __init__(
        self, pool: Pool, settings: Settings, *, name: str | None = None, exit_when_idle: float | None = None
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.name = name or settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self.topology = topology.build(settings, pools=[pool.spec])
        self.processor = Processor.for_settings(pool, settings, worker=self.name)
        self.names = self.processor.names
        self.pool_names = self.processor.pool_names
        self.policy = self.processor.policy
        self.exit_when_idle = exit_when_idle
        self.stats = Stats()
        self._results: queue.SimpleQueue[tuple[int, Result | _Reject]] = queue.SimpleQueue()
        self._wakeup_pending = threading.Event()
        self._stopping = False
        # One thread per prefetch slot of the work queue, and one for the suspect queue.
        self._executor = ThreadPoolExecutor(max_workers=settings.prefetch + 1, thread_name_prefix="task")
        self._flight = _Flight(generation=0)
        self._session: Session | None = None
        self._health = HealthFile(settings.health_file)
        self._done: OrderedDict[str, None] = OrderedDict()
        self._stuck_reported: set[Slot] = set()
        self._last_activity = time.monotonic()
        self.metrics: PoolMetrics | None = None
        if settings.metrics_port is not None:
            self.metrics = PoolMetrics(pool.name, pool.tasks)
            self.metrics.count_in_flight(lambda: len(self._flight.in_flight))

    @property
    def consumer_arguments(self) -> dict[str, int]:
        """``x-consumer-timeout`` above the pool's longest task (honoured by RabbitMQ 3.12 and
        later; older brokers ignore it and apply their global ``consumer_timeout``)."""
        if self.settings.max_task_seconds is None:
            return {}
        seconds = STUCK_FACTOR * self.settings.max_task_seconds + CONSUMER_TIMEOUT_MARGIN
        return {"x-consumer-timeout": int(seconds * 1000)}

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
        self._wakeup_pending.clear()  # a wake-up scheduled on a lost connection never ran
        self.stats.connections += 1
        if self.metrics is not None and self.stats.connections > 1:
            self.metrics.reconnected()
        try:
            if self.settings.declare_topology:
                topology.apply(session, self.topology)
            else:
                self._verify_topology(session)
            self._flight = _Flight(generation=self._flight.generation + 1)
            self._settle_results()  # what completed on the lost connection: publish, remember
            if self._stopping:
                return EXIT_OK
            for queue_name, prefetch in ((self.pool_names.queue, self.settings.prefetch),
                                         (self.pool_names.suspect_queue, 1)):
                session.consume(queue_name, prefetch=prefetch, on_delivery=self._dispatch,
                                arguments=self.consumer_arguments)
            log.info("worker %s consuming %s (prefetch %d) and %s (prefetch 1) on %s", self.name,
                     self.pool_names.queue, self.settings.prefetch, self.pool_names.suspect_queue, session.node)
            self._health.ready()
            if self.metrics is not None:
                self.metrics.consuming(True)
            self._last_activity = time.monotonic()
            drain_deadline: float | None = None
            while True:
                session.run(0.2)
                if session.blocked_reason is None:
                    self._settle_results()
                if not self._stopping and not session.consuming:
                    raise BrokerUnavailable(session.why_not_consuming())
                if not self._stuck():
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
                elif self._idle_long_enough(session):
                    log.info("queue empty and nothing in flight for %.0fs: exiting", self.exit_when_idle)
                    self.stop()
        finally:
            self._health.not_ready()
            if self.metrics is not None:
                self.metrics.consuming(False)
            self._session = None
            session.close()

    def _verify_topology(self, session: Session) -> None:
        """Without the permission to declare (WARREN_DECLARE_TOPOLOGY=false), check that the pool's
        exchanges and queues exist: `warren topology apply` declares them with other credentials
        (the chart's init container). Missing ones stop the worker, saying so: retrying would not
        bring them back, and in Kubernetes only a new pod runs the topology step again."""
        try:
            topology.verify(session, self.topology)
        except TopologyError as e:
            raise TopologyError(f"{e} (WARREN_DECLARE_TOPOLOGY is false, so this worker only checks its pool's "
                                "topology: apply it with `warren topology apply`, or restart the pod so its "
                                "topology step runs again)") from e

    def _lost_connection(self, error: BrokerUnavailable) -> None:
        dropped = len(self._flight.in_flight)
        log.warning("broker connection lost: %s; %d task(s) in flight will be redelivered", error, dropped)
        self._flight = _Flight(generation=self._flight.generation + 1)

    def _stuck(self) -> bool:
        """True while a task has run longer than STUCK_FACTOR x the pool's longest task."""
        if self.settings.max_task_seconds is None or not self._flight.in_flight:
            return False
        limit = STUCK_FACTOR * self.settings.max_task_seconds
        now = time.monotonic()
        stuck = [slot for slot, started in self._flight.in_flight.items() if now - started > limit]
        for slot in stuck:
            if slot not in self._stuck_reported:
                self._stuck_reported.add(slot)
                log.error("a task has run for over %.0fs (%d x WARREN_MAX_TASK_SECONDS): the worker reports "
                          "itself unhealthy until it ends", limit, STUCK_FACTOR)
        return bool(stuck)

    def _idle_long_enough(self, session: Session) -> bool:
        if self.exit_when_idle is None or self._flight.in_flight:
            return False
        if time.monotonic() - self._last_activity < self.exit_when_idle:
            return False
        ready = sum(session.queue_depth(q)[0] for q in (self.pool_names.queue, self.pool_names.suspect_queue))
        if ready:
            self._last_activity = time.monotonic()
            return False
        return True

    # -- deliveries ---------------------------------------------------------------------------
    def _dispatch(self, delivery: Delivery) -> None:
        flight = self._flight
        flight.in_flight[(delivery.channel, delivery.delivery_tag)] = time.monotonic()
        self._last_activity = time.monotonic()
        maybe_seen = delivery.redelivered or delivery.queue == self.pool_names.suspect_queue
        if maybe_seen and delivery.message_id in self._done:
            self._deliver_result(flight.generation, self.processor.already_done(delivery))
            return
        self._executor.submit(self._work, flight.generation, delivery)

    def _work(self, generation: int, delivery: Delivery) -> None:
        try:
            result: Result | _Reject = self.processor.handle(delivery)
        except BaseException as e:  # a bug in Warren itself: dead-letter it, never hold it unacked
            log.exception("internal error handling %s; dead-lettering it as internal_error", delivery.message_id)
            try:
                result = self.processor.internal_error(delivery, e)
            except BaseException:
                log.exception("cannot even build its dead letter; rejecting it into the dead-letter exchange")
                result = _Reject(delivery)
        self._deliver_result(generation, result)

    def _deliver_result(self, generation: int, result: Result | _Reject) -> None:
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
            if isinstance(result, _Reject):
                if generation == self._flight.generation:
                    self._reject(result.delivery)
                continue
            if generation != self._flight.generation:
                self._settle_orphan(result)
                continue
            action = self._publish_follow_ups(result)
            if action is not None:
                settled.append((result, action))
        if settled:
            self._ack([(r.delivery.channel, r.delivery.delivery_tag) for r, _ in settled])
            for result, action in settled:
                self._finish(result, action)

    def _settle_orphan(self, result: Result) -> None:
        """A result whose delivery died with an earlier connection: the broker redelivers the
        message. A completed task's follow-ups are published now and its id remembered, so the
        redelivery is acked without running it again; any other result is dropped."""
        message_id = result.delivery.message_id
        if not isinstance(result.action, Complete) or not message_id or message_id in self._done:
            self.stats.dropped_after_reconnect += 1
            log.info("dropping result of %s from a lost connection; the broker redelivers it", message_id)
            return
        if self._publish_follow_ups(result) is result.action:
            self._remember_done(message_id)
            log.info("task %s completed on a lost connection: follow-ups published; its redelivery will be "
                     "acked without running it again", message_id)

    def _remember_done(self, message_id: str) -> None:
        self._done[message_id] = None
        while len(self._done) > DONE_MEMORY:
            self._done.popitem(last=False)

    def _publish_follow_ups(self, result: Result) -> Action | None:
        """Publish a task's follow-ups with confirms; the action to ack it as, or None if it was
        rejected into the dead-letter exchange because even the fallback publish was refused."""
        session = self._session
        assert session is not None
        try:
            for message in result.publishes:
                self._publish(session, message)
            if result.reply is not None:
                # Confirmed but not mandatory (see Session.publish): a caller that has gone after
                # its timeout loses only a reply it no longer waits for.
                self._publish(session, result.reply, mandatory=False)
            if isinstance(result.action, Complete) and result.delivery.message_id:
                self._remember_done(result.delivery.message_id)  # should its ack be lost
            return result.action
        except PublishRefused as e:
            # A refused follow-up (no queue bound, queue full) counts as a failed attempt, so the
            # task is retried or dead-lettered with this error: never acked as if all went well.
            log.error("follow-up publish for %s refused: %s", result.delivery.message_id, e)
            action = decide(Failed(type(e).__name__, str(e)), attempt=result.attempt, policy=self.policy)
            try:
                for message in self.processor.follow_ups(result.delivery, action)[0]:
                    self._publish(session, message)
                return action
            except PublishRefused as again:
                log.error("fallback publish refused too (%s); rejecting into the queue's dead-letter exchange", again)
                self._reject(result.delivery)
                self._finish(result, DeadLetter(Reason.REJECTED, type(again).__name__, str(again), result.attempt))
                return None

    def _publish(self, session: Session, message: Outgoing, *, mandatory: bool = True) -> None:
        """Publish with its confirm. A nack (the broker could not take the message now: a quorum
        queue electing a new leader after its node was lost) is tried again every 0.25 s, events
        processed meanwhile, for up to WARREN_PUBLISH_TIMEOUT; only then is it a refusal."""
        deadline = time.monotonic() + self.settings.publish_timeout
        tries = 0
        while True:
            try:
                session.publish(message, mandatory=mandatory)
                return
            except Nacked as e:
                if time.monotonic() >= deadline:
                    raise
                tries += 1
                if tries == 1:
                    log.warning("%s; trying again for up to %gs", e, self.settings.publish_timeout)
                session.run(0.25)

    def _reject(self, delivery: Delivery) -> None:
        session = self._session
        assert session is not None
        session.reject(delivery.delivery_tag, channel=delivery.channel)
        self._flight.in_flight.pop((delivery.channel, delivery.delivery_tag), None)
        self._last_activity = time.monotonic()

    def _ack(self, slots: list[Slot]) -> None:
        """Ack ``slots``, per channel: one ``multiple`` ack for the tags below the oldest task still
        running on that channel (every tag below it is settled), single acks for the rest.
        Per-message acks cost the I/O thread a socket flush each and the quorum queue a settle
        command each."""
        in_flight = self._flight.in_flight
        for slot in slots:
            in_flight.pop(slot, None)
        session = self._session
        assert session is not None
        self._last_activity = time.monotonic()
        for channel in sorted({c for c, _ in slots}):
            tags = [t for c, t in slots if c == channel]
            # dispatch order is delivery-tag order within a channel
            oldest_running = next((t for c, t in in_flight if c == channel), None)
            below = [t for t in tags if oldest_running is None or t < oldest_running]
            if below:
                session.ack(max(below), multiple=True, channel=channel)
            for tag in tags:
                if oldest_running is not None and tag > oldest_running:
                    session.ack(tag, channel=channel)

    def _finish(self, result: Result, action: Action) -> None:
        outcome = _OUTCOMES[type(action)]
        if isinstance(action, Complete):
            self.stats.completed += 1
        elif isinstance(action, Retry):
            self.stats.retried += 1
        elif isinstance(action, DeadLetter):
            self.stats.dead_lettered += 1
        elif isinstance(action, Isolate):
            self.stats.isolated += 1
        else:
            self.stats.deferred += 1
        delivery = result.delivery
        if self.metrics is not None:
            self._measure(result, action, outcome)
        if not log.isEnabledFor(logging.INFO):
            return
        detail = ""
        fields: dict[str, object] = {}
        if isinstance(action, Retry):
            detail = f" delay_ms={action.delay_ms} error={action.error_class}"
            fields = {"delay_ms": action.delay_ms, "error": action.error_class}
        elif isinstance(action, DeadLetter):
            detail = f" reason={action.reason} error={action.error_class}"
            fields = {"reason": str(action.reason), "error": action.error_class}
        elif isinstance(action, Defer):
            detail = f" due_in_ms={action.remaining_ms}"
            fields = {"due_in_ms": action.remaining_ms}
        elif isinstance(action, Isolate):
            detail = f" deaths={action.deaths} to={self.pool_names.suspect_queue}"
            fields = {"deaths": action.deaths, "to": self.pool_names.suspect_queue}
        queue_name = delivery.queue or self.pool_names.queue
        duration_ms = round(result.seconds * 1000, 1)
        log.info(
            "message id=%s queue=%s task=%s attempt=%d redelivered=%s outcome=%s duration_ms=%.1f%s",
            delivery.message_id, queue_name, result.task_type, result.attempt, delivery.redelivered, outcome,
            duration_ms, detail,
            extra={"warren": {
                "message_id": delivery.message_id, "correlation_id": delivery.correlation_id or delivery.message_id,
                "pool": self.pool.name, "task": result.task_type, "attempt": result.attempt, "outcome": outcome,
                "duration_ms": duration_ms, "queue": queue_name, "redelivered": delivery.redelivered, **fields,
            }},
        )

    def _measure(self, result: Result, action: Action, outcome: str) -> None:
        metrics = self.metrics
        assert metrics is not None
        metrics.settled(result.task_type, outcome.replace("-", "_"), seconds=result.seconds)
        if isinstance(action, Retry):
            metrics.retried(result.task_type, action.error_class)
        elif isinstance(action, DeadLetter):
            metrics.dead_lettered(result.task_type, str(action.reason))
        timestamp = result.delivery.timestamp
        if timestamp and result.attempt <= 1 and not isinstance(action, Defer | Isolate):
            metrics.waited(time.time() - timestamp - result.seconds)


_OUTCOMES: dict[type, str] = {Complete: "completed", Retry: "retry", DeadLetter: "dead-lettered", Defer: "deferred",
                              Isolate: "isolated"}


@dataclass(frozen=True, slots=True)
class _Reject:
    """A delivery whose dead letter could not even be built: reject it into the queue's DLX."""

    delivery: Delivery
