"""How many replicas a worker Deployment should run: a pure decision over immutable values.

Three layers that never mix: ``spec`` validates a WorkerAutoscaler's spec and gives its
``Spec``; ``management`` fetches the queue's numbers into one ``stats.QueueStats``; ``decide``
turns spec, stats, the ``History`` it returned last time and the time into a ``Decision``. No I/O
and no hidden state: the memory of the past (recent recommendations, when the queue went empty,
the last scale) travels in ``History``, which the caller keeps and passes back.

The rules, in the order ``decide`` applies them:

1. the target: backlog (ready + unacked) per replica, or enough replicas to drain the backlog
   within ``drainSeconds`` at the observed per-consumer ack rate (the one last measured with
   every consumer busy: see ``ack_rate_per_consumer``);
2. the in-flight floor: never fewer replicas than hold unacked work, ceil(unacked / prefetch);
3. stabilization, as the HPA does it: scale up to at most the lowest recommendation of the
   scale-up window, down to at least the highest of the scale-down window;
4. the max step per decision, up and down; the in-flight floor again;
5. zero: asleep until the ready count reaches the activation threshold; to zero only after the
   queue was empty with nothing unacked for the whole scale-down window;
6. the bounds: always within [minReplicas, maxReplicas].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from warren_operator.stats import QueueStats

DRAIN_FALLBACK_MESSAGES_PER_REPLICA = 20
"""Drain mode's backlog per replica while no per-consumer ack rate is known (no acks, no consumers)."""

_EPSILON = 1e-9  # ceil(12.000000000001) must be 12, not 13
_HUGE = 1e12  # a vanishing ack rate asks for "more than max", not for infinity
_NEGLIGIBLE_RATE = 1e-6  # msg/s per consumer: one message in eleven days is no rate at all


@dataclass(frozen=True, slots=True)
class BacklogTarget:
    """At most this many messages (ready + unacked) per replica."""

    messages_per_replica: int


@dataclass(frozen=True, slots=True)
class DrainTarget:
    """Enough replicas to drain the backlog within ``seconds`` at the observed per-consumer rate."""

    seconds: float


Target = BacklogTarget | DrainTarget


@dataclass(frozen=True, slots=True)
class Behavior:
    """One direction's policy: a stabilization window, and a largest change per decision."""

    stabilization_seconds: float
    max_step: int | None  # None: no limit


DEFAULT_SCALE_UP = Behavior(stabilization_seconds=0.0, max_step=None)
DEFAULT_SCALE_DOWN = Behavior(stabilization_seconds=300.0, max_step=None)  # the HPA's defaults


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """What ``decide`` is told, in the CRD's vocabulary (its names in snake_case; ``deployment`` is
    ``targetRef.name``). The defaults of what a WorkerAutoscaler may leave out live here and only
    here (``spec.WorkerAutoscalerSpec`` leaves them None); they are the CRD's."""

    deployment: str  # spec.targetRef.name
    queue: str
    max_replicas: int
    target: Target
    min_replicas: int = 1
    activation_messages: int = 1  # ready messages that wake a Deployment at zero
    prefetch: int = 1  # each worker's prefetch (WARREN_PREFETCH)
    poll_seconds: float = 5.0
    scale_up: Behavior = DEFAULT_SCALE_UP
    scale_down: Behavior = DEFAULT_SCALE_DOWN


@dataclass(frozen=True, slots=True)
class PerConsumerRate:
    value: float  # acks per second per consumer
    source: str  # how it was obtained, for the reason
    capacity: bool = False  # a measure of what a consumer can do: History keeps it for later decisions


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True, slots=True)
class History:
    """What ``decide`` remembers between calls; ``History()`` before the first."""

    first_seen: float | None = None  # the first decision: what came before is unknown
    last_scale_time: float | None = None  # the last decision that changed the replica count
    empty_since: float | None = None  # start of the current run of empty observations
    recommendations: tuple[Recommendation, ...] = ()  # within the longer stabilization window
    last_consumers: int | None = None  # at the last decision
    last_ready: int | None = None  # at the last decision
    per_consumer_rate: float | None = None  # acks/s per consumer, last measured with all of them busy


@dataclass(frozen=True, slots=True)
class Decision:
    desired_replicas: int
    reason: str
    history: History


# --- decide ---------------------------------------------------------------------------------


def decide(spec: Spec, stats: QueueStats, *, history: History, now: float) -> Decision:
    """The replicas to run now, why, and the history to pass to the next call."""
    current = stats.current_replicas
    reasons: list[str] = []
    floor = in_flight_floor(stats, prefetch=spec.prefetch)
    rate = ack_rate_per_consumer(stats, history)
    wanted = _noted(reasons, *target_replicas(spec.target, stats, rate=rate))
    if floor > wanted:
        reasons.append(f"raised to {floor} for in-flight work "
                       f"({stats.unacked} unacked / prefetch {spec.prefetch})")
        wanted = floor
    remembered = _remember(history, stats, rate=rate, wanted=wanted, now=now, spec=spec)
    desired = _noted(reasons, *_stabilized(spec, remembered, current=current, wanted=wanted, now=now))
    desired = _noted(reasons, *_stepped(spec, current=current, desired=desired))
    if desired < floor:
        reasons.append(f"kept at the in-flight floor {floor}")
        desired = floor
    if spec.min_replicas == 0:
        desired = _noted(reasons, *_at_zero(spec, stats, remembered, desired=desired, now=now))
    desired = _noted(reasons, *_bounded(spec, desired))
    if desired != current:
        remembered = replace(remembered, last_scale_time=now)
    return Decision(desired, ", ".join(reasons), remembered)


def in_flight_floor(stats: QueueStats, *, prefetch: int) -> int:
    """The fewest replicas that can hold the unacked messages."""
    return -(-stats.unacked // prefetch)


def target_replicas(target: Target, stats: QueueStats, *, rate: PerConsumerRate | None) -> tuple[int, str]:
    """The replicas the target asks for, before any other rule, and how they were counted."""
    match target:
        case BacklogTarget(messages_per_replica=per_replica):
            return _per_replica(stats.backlog, per_replica)
        case DrainTarget(seconds=seconds):
            return _drain(stats, seconds, rate)
    raise TypeError(f"not a target: {target!r}")


def ack_rate_per_consumer(stats: QueueStats, history: History) -> PerConsumerRate | None:
    """What one consumer can ack per second, None when unknown or zero (no acks, no consumers).

    The observed rate says that only if every consumer was busy through the interval the ack rate
    averages (messages waiting at this decision and the last) and the consumers are those of the
    last decision: idle consumers ack what arrives, not what they could, and the consumer count is
    of this instant, so right after pods join or leave the quotient mixes two fleets (29 new
    consumers credited with the acks of 1). Otherwise the rate last measured under those
    conditions stands in, if there is one; but consumers that are the same and not all busy did
    ack at least their observed rate, so a remembered rate below it is out of date and the observed
    one is a floor. (Without that floor, one more message waiting could ask for fewer replicas:
    hypothesis found 0 -> 1 ready turning a stale 0.5 msg/s into a measured 2.0.)
    """
    observed = _observed_rate(stats)
    same_consumers = history.last_consumers in (None, stats.consumers)
    if observed is not None and same_consumers and stats.ready > 0 and history.last_ready != 0:
        # Messages waiting now and at the last decision: every consumer was busy.
        return PerConsumerRate(observed, f"{stats.ack_rate:.1f} acks/s / {stats.consumers} consumers", capacity=True)
    if history.per_consumer_rate is not None:
        if observed is not None and same_consumers and observed > history.per_consumer_rate:
            return PerConsumerRate(observed, f"{stats.ack_rate:.1f} acks/s / {stats.consumers} consumers not all "
                                             f"busy, above the {history.per_consumer_rate:.2f} last measured",
                                   capacity=True)
        now = (f"consumers {history.last_consumers} -> {stats.consumers}"
               if not same_consumers else "consumers not all busy")
        return PerConsumerRate(history.per_consumer_rate, f"last measured with all busy; {now}")
    if observed is None:
        return None
    return PerConsumerRate(observed, f"{stats.ack_rate:.1f} acks/s / {stats.consumers} consumers")


def _observed_rate(stats: QueueStats) -> float | None:
    if stats.ack_rate is None or stats.consumers == 0:
        return None
    rate = stats.ack_rate / stats.consumers
    return rate if rate >= _NEGLIGIBLE_RATE else None


def _per_replica(backlog: int, per_replica: int) -> tuple[int, str]:
    replicas = -(-backlog // per_replica)
    return replicas, f"backlog {backlog} msgs / {per_replica} per replica = {replicas}"


def _drain(stats: QueueStats, seconds: float, rate: PerConsumerRate | None) -> tuple[int, str]:
    """Replicas that drain the backlog in ``seconds``, counting arrivals while the queue is behind.

    With ready messages waiting every consumer is busy, so the per-consumer ack rate is what a
    replica can do, and the messages published meanwhile must drain too. With none waiting the
    consumers keep up, and an idle consumer's ack rate says nothing of what it could do: counting
    arrivals then would keep every replica the load happens to be spread over (the in-flight floor
    sizes a Deployment that keeps up: its busy consumers).
    """
    if rate is None:
        replicas, how = _per_replica(stats.backlog, DRAIN_FALLBACK_MESSAGES_PER_REPLICA)
        return replicas, f"no per-consumer ack rate yet ({_rate_text(stats)}): fallback {how}"
    arriving = (stats.publish_rate or 0.0) * seconds if stats.ready > 0 else 0.0
    needed = (stats.backlog + arriving) / (rate.value * seconds)
    replicas = max(0, math.ceil(min(needed, _HUGE) - _EPSILON))
    if stats.ready == 0:
        work = f"backlog {stats.backlog} msgs (queue keeping up)"
    elif stats.publish_rate is None:
        work = f"backlog {stats.backlog} msgs (publish rate unknown)"
    else:
        work = f"backlog {stats.backlog} msgs + {stats.publish_rate:.1f} msg/s arriving"
    return replicas, (f"{work} drained in {seconds:g} s at {rate.value:.2f} msg/s per consumer "
                      f"({rate.source}) = {replicas}")


def _rate_text(stats: QueueStats) -> str:
    acks = "unknown" if stats.ack_rate is None else f"{stats.ack_rate:.1f}/s"
    return f"acks {acks}, {stats.consumers} consumers"


def _remember(history: History, stats: QueueStats, *, rate: PerConsumerRate | None, wanted: int, now: float,
              spec: Spec) -> History:
    horizon = now - max(spec.scale_up.stabilization_seconds, spec.scale_down.stabilization_seconds)
    kept = tuple(r for r in history.recommendations if r.at >= horizon)
    empty = stats.backlog == 0
    return replace(
        history,
        first_seen=now if history.first_seen is None else history.first_seen,
        empty_since=(history.empty_since if history.empty_since is not None else now) if empty else None,
        recommendations=(*kept, Recommendation(now, wanted)),
        last_consumers=stats.consumers,
        last_ready=stats.ready,
        per_consumer_rate=rate.value if rate is not None and rate.capacity else history.per_consumer_rate,
    )


def _stabilized(spec: Spec, history: History, *, current: int, wanted: int, now: float) -> tuple[int, str | None]:
    """The HPA's rule: up to the lowest recommendation of the up window, down to the highest of
    the down window. Until a whole down window has been watched, the unknown past counts as
    having recommended the current count."""
    up_window, down_window = spec.scale_up.stabilization_seconds, spec.scale_down.stabilization_seconds
    lowest = min(r.replicas for r in history.recommendations if r.at >= now - up_window)
    highest = max(r.replicas for r in history.recommendations if r.at >= now - down_window)
    watched = now - (history.first_seen if history.first_seen is not None else now)
    unwatched = watched < down_window
    stabilized = min(max(current, lowest), max(highest, current) if unwatched else highest)
    if stabilized < wanted:
        return stabilized, f"scale-up held at {stabilized}, the lowest in the {up_window:g} s scale-up window"
    if stabilized > wanted and stabilized > highest:
        return stabilized, f"kept at {stabilized}: watched {watched:g} s of the {down_window:g} s scale-down window"
    if stabilized > wanted:
        return stabilized, f"kept at {stabilized}, the highest in the {down_window:g} s scale-down window"
    return stabilized, None


def _stepped(spec: Spec, *, current: int, desired: int) -> tuple[int, str | None]:
    up, down = spec.scale_up.max_step, spec.scale_down.max_step
    if up is not None and desired > current + up:
        return current + up, f"scale-up limited to +{up} per decision: {current + up}"
    if down is not None and desired < current - down:
        return current - down, f"scale-down limited to -{down} per decision: {current - down}"
    return desired, None


def _at_zero(spec: Spec, stats: QueueStats, history: History, *, desired: int, now: float) -> tuple[int, str | None]:
    """Waking from zero at the activation threshold, and going to zero only after a quiet window."""
    window = spec.scale_down.stabilization_seconds
    if stats.current_replicas == 0:
        if stats.ready >= spec.activation_messages:
            return max(1, desired), (f"waking from zero: {stats.ready} ready >= activation "
                                     f"threshold {spec.activation_messages}")
        if stats.unacked > 0:
            return max(1, desired), f"waking from zero: {stats.unacked} unacked"
        if desired > 0:
            return 0, f"staying at zero: {stats.ready} ready < activation threshold {spec.activation_messages}"
        return 0, None
    if desired > 0:
        return desired, None
    quiet = now - history.empty_since if history.empty_since is not None else 0.0
    if quiet >= window:
        return 0, f"queue empty with nothing unacked for {quiet:g} s: scaling to zero"
    return 1, f"queue empty for {quiet:g} s of the {window:g} s window: keeping 1"


def _bounded(spec: Spec, desired: int) -> tuple[int, str | None]:
    if desired > spec.max_replicas:
        return spec.max_replicas, f"capped at max {spec.max_replicas}"
    if desired < spec.min_replicas:
        return spec.min_replicas, f"raised to min {spec.min_replicas}"
    return desired, None


def _noted(reasons: list[str], value: int, reason: str | None) -> int:
    if reason is not None:
        reasons.append(reason)
    return value
