"""The scaling decision: ``decide`` specified by a table and properties (the spec it is given: test_spec)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from warren_operator.policy import (
    DEFAULT_SCALE_UP,
    DRAIN_FALLBACK_MESSAGES_PER_REPLICA,
    BacklogTarget,
    Behavior,
    Decision,
    DrainTarget,
    History,
    Recommendation,
    Spec,
    decide,
)
from warren_operator.stats import QueueStats

NOW = 1000.0
WATCHED = History(first_seen=0.0)  # watched for longer than any window, nothing recommended lately


def make_spec(**changes: Any) -> Spec:
    base = Spec(
        deployment="payments", queue="warren.payments", min_replicas=1, max_replicas=10,
        target=BacklogTarget(100), activation_messages=5, prefetch=1,
        scale_up=Behavior(0.0, None), scale_down=Behavior(60.0, None),
    )
    return replace(base, **changes)


def make_stats(current: int, ready: int = 0, unacked: int = 0, consumers: int | None = None,
               publish: float | None = None, ack: float | None = None) -> QueueStats:
    return QueueStats(ready=ready, unacked=unacked, current_replicas=current,
                      consumers=current if consumers is None else consumers,
                      publish_rate=publish, ack_rate=ack)


def recommended(*pairs: tuple[float, int], **fields: Any) -> History:
    """A watched history whose recommendations were ``replicas`` at ``seconds_ago`` each."""
    recs = tuple(Recommendation(NOW - ago, replicas) for ago, replicas in pairs)
    return replace(WATCHED, recommendations=recs, **fields)


DRAIN = DrainTarget(30.0)

# --- the table ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "stats", "history", "expected", "reason"),
    [
        # backlog per replica, capped at max: the reason explains the number
        (make_spec(), make_stats(4, ready=1196, unacked=4), WATCHED, 10,
         "backlog 1200 msgs / 100 per replica = 12, capped at max 10"),
        # backlog per replica, a scale-up within the bounds
        (make_spec(), make_stats(2, ready=348, unacked=2), WATCHED, 4, "backlog 350 msgs / 100 per replica = 4"),
        # the in-flight floor outweighs a small backlog: 6 unacked at prefetch 2 need 3 replicas
        (make_spec(prefetch=2), make_stats(3, unacked=6), WATCHED, 3, "raised to 3 for in-flight work"),
        # the floor never exceeds max: 15 unacked, max 10
        (make_spec(), make_stats(15, unacked=15), WATCHED, 10, "capped at max 10"),
        # scale-down held by a recommendation of 8 made 30 s ago, inside the 60 s window
        (make_spec(), make_stats(8, ready=99, unacked=1), recommended((30, 8)), 8,
         "kept at 8, the highest in the 60 s scale-down window"),
        # scale-down to the highest recommendation still inside the window
        (make_spec(), make_stats(8, ready=99, unacked=1), recommended((50, 5), (20, 3)), 5, "kept at 5"),
        # scale-down once the high recommendations have left the window
        (make_spec(), make_stats(8, ready=99, unacked=1), recommended((61, 8)), 1, "= 1"),
        # a fresh history has not watched the window: no scale-down yet
        (make_spec(), make_stats(8, ready=99, unacked=1), History(), 8, "watched 0 s of the 60 s"),
        # scale-up limited by the max step
        (make_spec(scale_up=Behavior(0.0, 2)), make_stats(2, ready=1198, unacked=2), WATCHED, 4,
         "scale-up limited to +2 per decision: 4"),
        # scale-down limited by the max step
        (make_spec(scale_down=Behavior(60.0, 1)), make_stats(5, ready=9, unacked=1), WATCHED, 4,
         "scale-down limited to -1 per decision: 4"),
        # scale-up held to the lowest recommendation of the scale-up window
        (make_spec(scale_up=Behavior(30.0, None)), make_stats(2, ready=798, unacked=2), recommended((10, 3)), 3,
         "scale-up held at 3"),
        # drain mode: 1010 msgs at 2 msg/s per consumer in 30 s need ceil(16.8) = 17
        (make_spec(target=DRAIN, max_replicas=20), make_stats(10, ready=1000, unacked=10, ack=20.0, publish=0.0),
         WATCHED, 17, "at 2.00 msg/s per consumer (20.0 acks/s / 10 consumers) = 17"),
        # drain mode while behind: 300 msgs arrive in the 30 s too, ceil(910 / 60) = 16
        (make_spec(target=DRAIN, max_replicas=20), make_stats(10, ready=600, unacked=10, ack=20.0, publish=10.0),
         WATCHED, 16, "backlog 610 msgs + 10.0 msg/s arriving drained in 30 s"),
        # drain mode keeping up (nothing ready): the idle consumers' low rate does not hold 10 replicas
        (make_spec(target=DRAIN), make_stats(10, unacked=3, ack=5.0, publish=5.0), WATCHED, 3,
         "(queue keeping up)"),
        # drain mode just after 28 pods joined: the 5 s ack average still counts 1 consumer's work,
        # so the rate last measured with all busy stands in: ceil((529 + 50 * 30) / (2 * 30)) = 34
        # (the mixed 35.6 / 29 = 1.23 msg/s would ask for 56)
        (make_spec(target=DRAIN, max_replicas=60), make_stats(29, ready=500, unacked=29, ack=35.6, publish=50.0),
         replace(WATCHED, last_consumers=1, last_ready=240, per_consumer_rate=2.0), 34,
         "at 2.00 msg/s per consumer (last measured with all busy; consumers 1 -> 29) = 34"),
        # a blip of waiting messages on consumers idle at the last decision: their capacity, not
        # their 1.38 msg/s, sizes the Deployment: ceil((39 + 52.4 * 30) / (2 * 30)) = 27, not 39
        (make_spec(target=DRAIN, max_replicas=60), make_stats(39, ready=15, unacked=24, ack=53.8, publish=52.4),
         replace(WATCHED, last_consumers=39, last_ready=0, per_consumer_rate=2.0), 27,
         "(last measured with all busy; consumers not all busy) = 27"),
        # drain mode, no ack rate yet: the stated fallback, 100 msgs / 20 per replica
        (make_spec(target=DRAIN), make_stats(1, ready=99, unacked=1), WATCHED, 5,
         "no per-consumer ack rate yet (acks unknown, 1 consumers): fallback backlog 100 msgs / 20 per replica = 5"),
        # drain mode, consumers but no acks (stuck workers): the fallback too
        (make_spec(target=DRAIN), make_stats(3, ready=97, unacked=3, ack=0.0), WATCHED, 5, "fallback"),
        # from zero: the activation threshold reached wakes one replica
        (make_spec(min_replicas=0), make_stats(0, ready=5), WATCHED, 1,
         "waking from zero: 5 ready >= activation threshold 5"),
        # from zero with a large backlog: straight to what the backlog needs
        (make_spec(min_replicas=0), make_stats(0, ready=700), WATCHED, 7, "waking from zero"),
        # below the activation threshold a Deployment at zero stays there
        (make_spec(min_replicas=0), make_stats(0, ready=4), WATCHED, 0,
         "staying at zero: 4 ready < activation threshold 5"),
        # to zero: empty with nothing unacked for the whole 60 s window
        (make_spec(min_replicas=0), make_stats(2), recommended((60, 0), (30, 0), empty_since=NOW - 60), 0,
         "queue empty with nothing unacked for 60 s: scaling to zero"),
        # empty for only 30 s of the window: one replica stays
        (make_spec(min_replicas=0), make_stats(2), recommended((30, 0), empty_since=NOW - 30), 1,
         "queue empty for 30 s of the 60 s window: keeping 1"),
        # min replicas hold an idle Deployment up
        (make_spec(min_replicas=3), make_stats(5), WATCHED, 3, "raised to min 3"),
    ],
)
def test_decision_table(spec: Spec, stats: QueueStats, history: History, expected: int, reason: str) -> None:
    decision = decide(spec, stats, history=history, now=NOW)
    assert decision.desired_replicas == expected, decision.reason
    assert reason in decision.reason


def test_the_new_history_remembers_this_decision() -> None:
    decision = decide(make_spec(min_replicas=0), make_stats(3, ack=1.5), history=History(), now=NOW)
    assert decision.history == History(first_seen=NOW, last_scale_time=None, empty_since=NOW,
                                       recommendations=(Recommendation(NOW, 0),), last_consumers=3, last_ready=0)


@pytest.mark.parametrize(
    ("ready_before", "consumers", "ready", "each", "remembered"),
    [
        # messages waiting at both decisions, the same consumers: the observed rate is their capacity
        (5, 4, 10, 2.5, 2.5),
        (5, 4, 10, 1.5, 1.5),
        # consumers joined since the last decision: the 5 s ack average mixes two fleets
        (5, 29, 10, 2.5, 2.0),
        # nothing waiting now: idle consumers ack what arrives, not what they could...
        (5, 4, 0, 1.5, 2.0),
        # ...but at least that: acking more than the remembered rate, they show it out of date
        (5, 4, 0, 2.5, 2.5),
        # nothing waiting at the last decision: the consumers were idle for part of the interval
        (0, 4, 10, 1.5, 2.0),
        (0, 4, 10, 2.5, 2.5),
    ],
)
def test_the_per_consumer_rate_is_remembered_only_when_every_consumer_was_busy(
        ready_before: int, consumers: int, ready: int, each: float, remembered: float) -> None:
    history = replace(WATCHED, last_consumers=4, last_ready=ready_before, per_consumer_rate=2.0)
    stats = make_stats(consumers, ready=ready, ack=each * consumers)
    decision = decide(make_spec(target=DRAIN), stats, history=history, now=NOW)
    assert decision.history.per_consumer_rate == remembered


def test_scale_down_waits_one_window_after_the_spike() -> None:
    spec, history, replicas, times_down = make_spec(), WATCHED, 1, []
    for now, ready in [(0, 0), (5, 900), (10, 900), (15, 0), (20, 0), (60, 0), (65, 0), (70, 0), (75, 0)]:
        decision = decide(spec, make_stats(replicas, ready=ready), history=history, now=float(now))
        if decision.desired_replicas < replicas:
            times_down.append(now)
        history, replicas = decision.history, decision.desired_replicas
    assert times_down == [75]  # the last recommendation of 9 was at 10 s; 60 s later it has left the window
    assert replicas == 1


def test_old_recommendations_are_forgotten() -> None:
    history = recommended((400, 9), (100, 7), (59, 2))
    decision = decide(make_spec(), make_stats(1), history=history, now=NOW)
    assert [r.replicas for r in decision.history.recommendations] == [2, 0]


# --- properties -----------------------------------------------------------------------------

# Times on a half-second grid keep the arithmetic exact: NOW - (NOW - w) == w.
seconds = st.integers(0, 1200).map(lambda n: n / 2)
past = st.integers(0, 4000).map(lambda n: NOW - n / 2)
maybe_step = st.none() | st.integers(1, 10)
rates = st.none() | st.floats(0, 1000, allow_nan=False)
targets = st.builds(BacklogTarget, st.integers(1, 500)) | st.builds(DrainTarget, st.floats(1, 600))


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    low = draw(st.integers(0, 20))
    return Spec(
        deployment="d", queue="q", min_replicas=low, max_replicas=draw(st.integers(max(low, 1), 60)),
        target=draw(targets), activation_messages=draw(st.integers(1, 100)),
        prefetch=draw(st.integers(1, 50)), poll_seconds=5.0,
        scale_up=Behavior(draw(seconds), draw(maybe_step)), scale_down=Behavior(draw(seconds), draw(maybe_step)),
    )


def queue_stats(ready: st.SearchStrategy[int], unacked: st.SearchStrategy[int]) -> st.SearchStrategy[QueueStats]:
    return st.builds(QueueStats, ready=ready, unacked=unacked, consumers=st.integers(0, 80),
                     current_replicas=st.integers(0, 80), publish_rate=rates, ack_rate=rates)


# Busy queues, and quiet ones (where scale-downs and scale-to-zero happen).
stats_strategy = queue_stats(st.integers(0, 20_000), st.integers(0, 2_000)) | queue_stats(
    st.integers(0, 3), st.integers(0, 2))


@st.composite
def histories(draw: st.DrawFn) -> History:
    replicas = st.integers(0, 100) | st.integers(0, 2)
    recs = draw(st.lists(st.builds(Recommendation, past, replicas), max_size=8))
    return History(first_seen=draw(st.none() | past), last_scale_time=draw(st.none() | past),
                   empty_since=draw(st.none() | past), recommendations=tuple(sorted(recs, key=lambda r: r.at)),
                   last_consumers=draw(st.none() | st.integers(0, 80)), last_ready=draw(st.none() | st.integers(0, 50)),
                   per_consumer_rate=draw(st.none() | st.floats(1e-6, 100)))


def decide_now(spec: Spec, stats: QueueStats, history: History) -> Decision:
    return decide(spec, stats, history=history, now=NOW)


@given(specs(), stats_strategy, histories())
def test_always_within_min_and_max(spec: Spec, stats: QueueStats, history: History) -> None:
    assert spec.min_replicas <= decide_now(spec, stats, history).desired_replicas <= spec.max_replicas


@given(specs(), stats_strategy, histories())
def test_never_fewer_replicas_than_hold_unacked_work(spec: Spec, stats: QueueStats, history: History) -> None:
    floor = math.ceil(stats.unacked / spec.prefetch)
    assert decide_now(spec, stats, history).desired_replicas >= min(floor, spec.max_replicas)


@given(specs(), stats_strategy, histories(), st.integers(0, 5_000), st.integers(0, 500))
def test_monotone_in_backlog(spec: Spec, stats: QueueStats, history: History, more_ready: int,
                             more_unacked: int) -> None:
    bigger = replace(stats, ready=stats.ready + more_ready, unacked=stats.unacked + more_unacked)
    assert decide_now(spec, bigger, history).desired_replicas >= decide_now(spec, stats, history).desired_replicas


@given(specs(), stats_strategy, histories())
def test_scale_up_moves_at_most_the_max_step_beyond_what_in_flight_work_holds(
        spec: Spec, stats: QueueStats, history: History) -> None:
    step = spec.scale_up.max_step
    assume(step is not None)
    assert step is not None
    floor = min(math.ceil(stats.unacked / spec.prefetch), spec.max_replicas)
    ceiling = max(stats.current_replicas + step, floor, spec.min_replicas)
    assert decide_now(spec, stats, history).desired_replicas <= ceiling


@given(specs(), stats_strategy, histories())
def test_scale_down_moves_at_most_the_max_step(spec: Spec, stats: QueueStats, history: History) -> None:
    step = spec.scale_down.max_step
    assume(step is not None)
    assert step is not None
    least = min(stats.current_replicas - step, spec.max_replicas)
    assert decide_now(spec, stats, history).desired_replicas >= least


@st.composite
def quiet_cases(draw: st.DrawFn) -> tuple[Spec, QueueStats, History]:
    """A queue gone quiet after busier times, watched for about one scale-down window."""
    spec = draw(specs())
    spec = replace(spec, min_replicas=min(spec.min_replicas, draw(st.integers(0, 2))))
    window = spec.scale_down.stabilization_seconds
    around_window = st.integers(-20, 20).map(lambda n: NOW - window + n / 2)
    when = around_window | past
    recs = draw(st.lists(st.builds(Recommendation, when, st.integers(0, 3) | st.integers(0, 100)), max_size=6))
    stats = draw(queue_stats(st.sampled_from([0, 0, 0, 1, 2]), st.sampled_from([0, 0, 0, 1])))
    history = History(first_seen=draw(when), last_scale_time=None, empty_since=draw(st.none() | when),
                      recommendations=tuple(sorted(recs, key=lambda r: r.at)))
    current = draw(st.integers(1, spec.max_replicas))
    return spec, replace(stats, current_replicas=current), history


@given(quiet_cases())
def test_a_scale_down_follows_every_recommendation_of_the_window(case: tuple[Spec, QueueStats, History]) -> None:
    spec, stats, history = case
    decision = decide_now(spec, stats, history)
    assume(decision.desired_replicas < stats.current_replicas <= spec.max_replicas)
    window = spec.scale_down.stabilization_seconds
    assert decision.history.first_seen is not None and NOW - decision.history.first_seen >= window
    in_window = [r.replicas for r in decision.history.recommendations if r.at >= NOW - window]
    assert max(in_window) <= decision.desired_replicas


@given(specs(), stats_strategy, histories(), st.floats(0, 1, exclude_max=True), st.integers(0, 40))
def test_no_scale_down_below_a_recommendation_inside_the_window(
        spec: Spec, stats: QueueStats, history: History, fraction: float, extra: int) -> None:
    at = NOW - fraction * spec.scale_down.stabilization_seconds
    recs = tuple(sorted((*history.recommendations, Recommendation(at, stats.current_replicas + extra)),
                        key=lambda r: r.at))
    decision = decide_now(spec, stats, replace(history, recommendations=recs))
    assert decision.desired_replicas >= min(stats.current_replicas, spec.max_replicas)


@st.composite
def idle_cases(draw: st.DrawFn) -> tuple[Spec, QueueStats, History]:
    """A Deployment allowed to reach zero, its queue empty for about one scale-down window."""
    spec = draw(specs())
    window = spec.scale_down.stabilization_seconds
    spec = replace(spec, min_replicas=0, scale_down=Behavior(window, draw(st.none() | st.integers(1, 3))))
    around_window = st.integers(-20, 20).map(lambda n: NOW - window + n / 2)
    mostly_zero = st.sampled_from([0, 0, 0, 0, 0, 1])
    recs = draw(st.lists(st.builds(Recommendation, around_window, mostly_zero), max_size=3))
    stats = draw(queue_stats(mostly_zero, mostly_zero))
    history = History(first_seen=NOW - window - 10, last_scale_time=None,
                      empty_since=None if draw(st.integers(0, 9)) == 0 else draw(around_window),
                      recommendations=tuple(sorted(recs, key=lambda r: r.at)))
    return spec, replace(stats, current_replicas=draw(st.integers(1, 4))), history


@given(idle_cases())
def test_scale_to_zero_only_after_a_whole_window_empty(case: tuple[Spec, QueueStats, History]) -> None:
    spec, stats, history = case
    decision = decide_now(spec, stats, history)
    assume(decision.desired_replicas == 0)
    assert stats.ready == 0 and stats.unacked == 0
    empty_since = decision.history.empty_since
    assert empty_since is not None and NOW - empty_since >= spec.scale_down.stabilization_seconds


@given(specs(), st.integers(1, 80), seconds)
def test_an_idle_deployment_goes_to_zero_once_the_window_has_passed(spec: Spec, current: int, extra: float) -> None:
    spec = replace(spec, min_replicas=0, scale_down=replace(spec.scale_down, max_step=None))
    window = spec.scale_down.stabilization_seconds
    history = History(first_seen=NOW - window - extra, empty_since=NOW - window - extra,
                      recommendations=(Recommendation(NOW - window, 0),))
    assert decide_now(spec, make_stats(current, ack=0.0, publish=0.0), history).desired_replicas == 0


@given(specs(), stats_strategy, histories())
def test_wakes_from_zero_as_soon_as_the_activation_threshold_is_reached(
        spec: Spec, stats: QueueStats, history: History) -> None:
    stats = replace(stats, current_replicas=0, ready=max(stats.ready, spec.activation_messages))
    assert decide_now(spec, stats, history).desired_replicas >= 1


@given(specs(), stats_strategy, histories())
def test_stays_at_zero_below_the_activation_threshold(spec: Spec, stats: QueueStats, history: History) -> None:
    spec = replace(spec, min_replicas=0)
    stats = replace(stats, current_replicas=0, unacked=0, ready=stats.ready % spec.activation_messages)
    assert decide_now(spec, stats, history).desired_replicas == 0


drain_specs = specs().map(lambda spec: replace(
    spec, target=DrainTarget(30.0), min_replicas=max(spec.min_replicas, 1),
    scale_up=DEFAULT_SCALE_UP, scale_down=Behavior(0.0, None)))  # no window or step in the way


@given(drain_specs, stats_strategy, st.floats(0.01, 100), st.integers(1, 80))
def test_drain_mode_needs_the_replicas_that_drain_the_backlog_at_the_per_consumer_rate(
        spec: Spec, stats: QueueStats, per_consumer: float, consumers: int) -> None:
    stats = replace(stats, consumers=consumers, ack_rate=per_consumer * consumers)
    arriving = (stats.publish_rate or 0.0) * 30.0 if stats.ready else 0.0
    drains = math.ceil((stats.backlog + arriving) / (per_consumer * 30.0) - 1e-9)
    needed = max(drains, math.ceil(stats.unacked / spec.prefetch))
    expected = min(max(needed, spec.min_replicas), spec.max_replicas)
    assert decide_now(spec, stats, History()).desired_replicas == expected


@given(drain_specs, stats_strategy, st.floats(0.01, 100), st.integers(1, 40), st.integers(2, 5))
def test_drain_mode_reads_the_rate_per_consumer(
        spec: Spec, stats: QueueStats, per_consumer: float, consumers: int, factor: int) -> None:
    few = replace(stats, consumers=consumers, ack_rate=per_consumer * consumers)
    many = replace(stats, consumers=consumers * factor, ack_rate=per_consumer * consumers * factor)
    faster = replace(few, ack_rate=per_consumer * consumers * factor)
    assert decide_now(spec, many, History()).desired_replicas == decide_now(spec, few, History()).desired_replicas
    assert decide_now(spec, faster, History()).desired_replicas <= decide_now(spec, few, History()).desired_replicas


@given(drain_specs, stats_strategy, histories(), st.floats(0.01, 100), rates, st.booleans())
def test_drain_mode_ignores_an_ack_rate_that_does_not_measure_busy_consumers(
        spec: Spec, stats: QueueStats, history: History, busy_rate: float, other_ack_rate: float | None,
        consumers_changed: bool) -> None:
    if consumers_changed:  # the ack average mixes two fleets
        history = replace(history, last_consumers=stats.consumers + 1, per_consumer_rate=busy_rate)
    else:  # nothing waiting: the consumers are not all busy, and ack at most what they could
        stats = replace(stats, ready=0)
        history = replace(history, last_consumers=stats.consumers, per_consumer_rate=busy_rate)
        assume(other_ack_rate is None or other_ack_rate <= busy_rate * stats.consumers)
        stats = replace(stats, ack_rate=min(stats.ack_rate or 0.0, busy_rate * stats.consumers))
    one, other = stats, replace(stats, ack_rate=other_ack_rate)
    assert decide_now(spec, one, history).desired_replicas == decide_now(spec, other, history).desired_replicas


@given(drain_specs, stats_strategy, st.floats(0.01, 10), st.floats(1.01, 10), st.integers(1, 80))
def test_idle_consumers_acking_more_than_the_remembered_rate_replace_it(
        spec: Spec, stats: QueueStats, stale: float, factor: float, consumers: int) -> None:
    history = replace(History(), last_consumers=consumers, last_ready=0, per_consumer_rate=stale)
    idle = replace(stats, ready=0, consumers=consumers, ack_rate=stale * factor * consumers)
    decision = decide_now(spec, idle, history)
    assert decision.history.per_consumer_rate == pytest.approx(stale * factor)
    assert decision.desired_replicas <= decide_now(spec, replace(idle, ack_rate=None), history).desired_replicas


@given(drain_specs, stats_strategy, st.sampled_from(["no rate", "no acks", "no consumers"]))
def test_drain_mode_without_a_rate_falls_back_to_the_stated_backlog_per_replica(
        spec: Spec, stats: QueueStats, missing: str) -> None:
    stats = {"no rate": replace(stats, ack_rate=None), "no acks": replace(stats, ack_rate=0.0),
             "no consumers": replace(stats, consumers=0)}[missing]
    fallback = replace(spec, target=BacklogTarget(DRAIN_FALLBACK_MESSAGES_PER_REPLICA))
    decision = decide_now(spec, stats, History())
    assert decision.desired_replicas == decide_now(fallback, stats, History()).desired_replicas
    fallback_reason = f"fallback backlog {stats.backlog} msgs / {DRAIN_FALLBACK_MESSAGES_PER_REPLICA} per replica"
    assert fallback_reason in decision.reason


@given(specs(), stats_strategy, histories())
def test_decide_is_pure(spec: Spec, stats: QueueStats, history: History) -> None:
    assert decide_now(spec, stats, history) == decide_now(spec, stats, history)
