"""Autoscaling simulation: ``python -m bench.autoscale [--drain-seconds S] [--down-window S] [--sweep]``.

A discrete-time simulation (1 s steps) of one work queue and its worker Deployment through a
traffic spike, scaled by Warren's policy (the real ``warren_operator.policy.decide``) and by a
model of KEDA's RabbitMQ scaler driving the HPA with their defaults. No broker, no cluster: the
point is the control loops, with the same workload, pods and queue for every contender.

The world: messages arrive as a Poisson process (``--even``: evenly spread; ``--seed``) at 2/s
for 60 s, 50/s for 120 s, 2/s for 600 s; a worker at prefetch 1 takes 0.5 s per message, and a
free worker takes the oldest waiting message (fair dispatch); a new pod consumes 10 s after it is
created; a scale-down removes pods as a ReplicaSet does (not-yet-started first, then the most
recently started), busy or not: a busy pod finishes its message (Warren's SIGTERM drain) and
exits. The management API's numbers (depths, 5 s average rates) refresh every 5 s, as RabbitMQ's
statistics do. The table's backlog is the ready messages (what waits; unacked ones are in work).

Warren: polls every 5 s (2 s after each statistics refresh), drain mode with a 30 s target,
scale-up at once, a 60 s scale-down window. A second Warren row withholds the publish rate, which
is the drain rule without arrivals (backlog / per-consumer rate only), to show what counting
arrivals buys.

KEDA (defaults, ``mode: QueueLength``, ``value: 20``, AMQP protocol, so ready messages only): the
HPA syncs every 15 s with desired = ceil(current * metric / (20 * current)) (10 % tolerance),
scale-up limited to max(+4 pods, +100 %) per 15 s, a 300 s scale-down stabilization window. By
default (``useCachedMetrics: false``) the HPA's every read queries the broker, so KEDA's 30 s
``pollingInterval`` only governs waking from zero; the "30 s cache" row is
``useCachedMetrics: true``, where the HPA sees the value of the last 30 s poll. KEDA's and Warren's
minimum is 1 replica here (KEDA at 0 would also scale a busy queue with nothing ready to zero).

Runs the spike, and a "plateau" (the spike's rate held for 10 minutes); prints a table for each
(``--sweep`` adds Warren with other drain targets and windows); writes
``bench/results/autoscale.png`` (backlog and replicas over time in the spike),
``autoscale-plateau.png``, ``autoscale.json`` and Warren's decisions with their reasons
(``autoscale-decisions.txt``).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from warren_operator.policy import Behavior, DrainTarget, History, QueueStats, Spec, decide

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

STATS_INTERVAL = 5  # RabbitMQ's collect_statistics_interval, seconds
TREND = 5  # "draining" once the backlog (above 10) is lower than this many seconds before: Poisson noise


@dataclass(frozen=True, slots=True)
class Scenario:
    quiet_rate: float = 2.0
    quiet_seconds: int = 60
    spike_rate: float = 50.0
    spike_seconds: int = 120
    after_seconds: int = 600
    service_seconds: float = 0.5
    pod_start_seconds: int = 10
    poisson: bool = True  # arrivals: a Poisson process, or evenly spread
    min_replicas: int = 1
    max_replicas: int = 50

    @property
    def spike_start(self) -> int:
        return self.quiet_seconds

    @property
    def spike_end(self) -> int:
        return self.quiet_seconds + self.spike_seconds

    @property
    def duration(self) -> int:
        return self.spike_end + self.after_seconds

    def rate(self, t: int) -> float:
        return self.spike_rate if self.spike_start <= t < self.spike_end else self.quiet_rate


# --- the world: a queue and a Deployment's pods -----------------------------------------------


@dataclass(slots=True)
class Pod:
    created: int
    consuming_from: int
    busy_until: float | None = None  # holding one unacked message (prefetch 1) until then


@dataclass
class Cluster:
    scenario: Scenario
    rng: random.Random
    replicas: int = 0
    pods: list[Pod] = field(default_factory=list)
    draining: list[Pod] = field(default_factory=list)  # removed while busy: finishing their message
    waiting: deque[float] = field(default_factory=deque)  # arrival times of the ready messages
    arrived_fraction: float = 0.0
    next_arrival: float = 0.0  # Poisson arrivals
    publishes: deque[int] = field(default_factory=lambda: deque(maxlen=STATS_INTERVAL))
    acks: deque[int] = field(default_factory=lambda: deque(maxlen=STATS_INTERVAL))
    waits: list[float] = field(default_factory=list)
    sample: QueueStats | None = None  # what the management API shows, refreshed every 5 s
    _now: int = 0

    @property
    def ready(self) -> int:
        return len(self.waiting)

    @property
    def unacked(self) -> int:
        return sum(1 for pod in (*self.pods, *self.draining) if pod.busy_until is not None)

    @property
    def consumers(self) -> int:
        return sum(1 for pod in self.pods if pod.consuming_from <= self._now)

    def scale(self, replicas: int, now: int) -> int:
        """Set the Deployment's replicas; returns how many removed pods were holding a message."""
        self.replicas = replicas
        for _ in range(replicas - len(self.pods)):
            self.pods.append(Pod(created=now, consuming_from=now + self.scenario.pod_start_seconds))
        busy = 0
        for pod in self._removal_order()[:max(0, len(self.pods) - replicas)]:
            self.pods.remove(pod)
            if pod.busy_until is not None:
                busy += 1
                self.draining.append(pod)
        return busy

    def _removal_order(self) -> list[Pod]:
        """A ReplicaSet's choice: pods not yet ready first, then the most recently ready; busy or not."""
        shuffled = self.rng.sample(self.pods, len(self.pods))
        return sorted(shuffled, key=lambda pod: (pod.consuming_from <= self._now, -pod.consuming_from))

    def step(self, t: int) -> None:
        """Second [t, t + 1): messages arrive evenly spread over it, every consuming pod works through it."""
        self._now = t
        arrived = self._arrive(t)
        acks = self._finish_draining(t + 1)
        acks += self._serve(t)
        self.publishes.append(arrived)
        self.acks.append(acks)
        self._now = t + 1
        if (t + 1) % STATS_INTERVAL == 0:
            self.sample = self._snapshot()

    def _arrive(self, t: int) -> int:
        before = len(self.waiting)
        if self.scenario.poisson:
            self.next_arrival = max(self.next_arrival, float(t))
            while self.next_arrival < t + 1:
                self.waiting.append(self.next_arrival)
                self.next_arrival += self.rng.expovariate(self.scenario.rate(t))
        else:
            self.arrived_fraction += self.scenario.rate(t)
            count = int(self.arrived_fraction)
            self.arrived_fraction -= count
            self.waiting.extend(t + (i + 0.5) / count for i in range(count))
        return len(self.waiting) - before

    def _finish_draining(self, end: int) -> int:
        done = [pod for pod in self.draining if pod.busy_until is not None and pod.busy_until <= end]
        self.draining = [pod for pod in self.draining if pod not in done]
        return len(done)

    def _serve(self, t: int) -> int:
        end, acks = t + 1, 0
        consuming = [pod for pod in self.pods if pod.consuming_from <= t]
        free = [(max(float(t), pod.busy_until or t), self.rng.random(), i) for i, pod in enumerate(consuming)]
        heapq.heapify(free)
        while free:
            at, _, i = heapq.heappop(free)
            pod = consuming[i]
            if pod.busy_until is not None:
                if pod.busy_until > end:
                    continue  # still on its message when the second ends
                acks += 1
                pod.busy_until = None
            if not self.waiting or self.waiting[0] >= end:
                continue  # idle for the rest of the second
            arrival = self.waiting.popleft()
            start = max(at, arrival)
            self.waits.append(start - arrival)
            pod.busy_until = start + self.scenario.service_seconds
            heapq.heappush(free, (pod.busy_until, self.rng.random(), i))
        return acks

    def _snapshot(self) -> QueueStats:
        full = len(self.acks) == STATS_INTERVAL
        return QueueStats(ready=self.ready, unacked=self.unacked, consumers=self.consumers,
                          current_replicas=self.replicas,
                          publish_rate=sum(self.publishes) / STATS_INTERVAL if full else None,
                          ack_rate=sum(self.acks) / STATS_INTERVAL if full else None)


# --- the contenders ---------------------------------------------------------------------------


class Autoscaler(Protocol):
    label: str

    def control(self, now: int, cluster: Cluster) -> int | None:
        """The replicas to set at ``now``, or None to leave them."""


@dataclass
class WarrenAutoscaler:
    label: str
    spec: Spec
    withhold_publish_rate: bool = False
    poll_offset: int = 2  # seconds after each statistics refresh
    history: History = field(default_factory=History)
    log: list[str] = field(default_factory=list)

    def control(self, now: int, cluster: Cluster) -> int | None:
        if now % int(self.spec.poll_seconds) != self.poll_offset or cluster.sample is None:
            return None
        stats = replace(cluster.sample, current_replicas=cluster.replicas)
        if self.withhold_publish_rate:
            stats = replace(stats, publish_rate=None)
        decision = decide(self.spec, stats, history=self.history, now=float(now))
        self.history = decision.history
        if decision.desired_replicas != cluster.replicas:
            self.log.append(f"t={now:>4} {cluster.replicas:>3} -> {decision.desired_replicas:<3} {decision.reason}")
        return decision.desired_replicas


@dataclass
class KedaHpa:
    """KEDA's RabbitMQ scaler feeding the HPA: by default QueueLength over AMQP (ready messages
    only, ``value`` per replica); ``mode="MessageRate"`` (HTTP: the management API's publish rate,
    ``value`` messages per second per replica). The HPA's defaults unless tuned: a 300 s
    scale-down window, scale-up by max(+4 pods, +100 %) per 15 s (``scale_up_unlimited``: as many
    as recommended, like Warren's policy without a maxStep)."""

    label: str
    min_replicas: int
    max_replicas: int
    messages_per_replica: float = 20.0  # KEDA's `value`
    cache_seconds: int | None = None  # useCachedMetrics: the value of KEDA's last poll
    sync_seconds: int = 15
    tolerance: float = 0.1
    down_window: int = 300
    mode: str = "QueueLength"
    scale_up_unlimited: bool = False
    recommendations: list[tuple[int, int]] = field(default_factory=list)
    scale_ups: list[tuple[int, int]] = field(default_factory=list)
    cached: float = 0

    def control(self, now: int, cluster: Cluster) -> int | None:
        if self.cache_seconds and now % self.cache_seconds == 0:
            self.cached = self._metric(cluster)
        if now % self.sync_seconds != 0:
            return None
        metric = self.cached if self.cache_seconds else self._metric(cluster)
        current = cluster.replicas
        recommended = self._replicas_for(metric, current)
        self.recommendations = [(at, r) for at, r in self.recommendations if at > now - self.down_window]
        self.recommendations.append((now, recommended))
        desired = min(max(current, recommended), max(r for _, r in self.recommendations))
        desired = min(desired, self._scale_up_limit(now, current))
        desired = min(max(desired, self.min_replicas), self.max_replicas)
        if desired > current:
            self.scale_ups.append((now, desired - current))
        return desired

    def _metric(self, cluster: Cluster) -> float:
        if self.mode == "MessageRate":  # the management API's 5 s average, refreshed every 5 s
            return (cluster.sample.publish_rate or 0.0) if cluster.sample else 0.0
        return cluster.ready

    def _replicas_for(self, metric: float, current: int) -> int:
        usage_ratio = metric / (self.messages_per_replica * current) if current else math.inf
        if abs(1.0 - usage_ratio) <= self.tolerance:
            return current
        return math.ceil(metric / self.messages_per_replica)

    def _scale_up_limit(self, now: int, current: int) -> int:
        """The HPA's default scale-up policies, Pods 4 and Percent 100 per 15 s, the larger wins."""
        if self.scale_up_unlimited:
            return self.max_replicas
        added = sum(n for at, n in self.scale_ups if at > now - self.sync_seconds)
        start = current - added
        return max(start + 4, math.ceil(start * 2.0))


# --- running and measuring --------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    label: str
    waiting: list[int]  # ready messages at the end of each second: the backlog the metrics read
    in_flight: list[int]  # unacked messages at the end of each second
    replicas: list[int]
    pod_seconds: int
    busy_removed: int
    below_floor: int  # scale-downs to fewer replicas than pods holding messages at that moment
    waits: list[float]


def simulate(autoscaler: Autoscaler, scenario: Scenario, *, seed: int) -> Run:
    cluster = Cluster(scenario, random.Random(seed))
    cluster.scale(scenario.min_replicas, now=-scenario.pod_start_seconds)
    waiting, in_flight, replicas = [0], [0], [cluster.replicas]
    pod_seconds = busy_removed = below_floor = 0
    for t in range(scenario.duration):
        cluster.step(t)
        desired = autoscaler.control(t + 1, cluster)
        if desired is not None and desired != cluster.replicas:
            below_floor += desired < cluster.replicas and desired < cluster.unacked
            busy_removed += cluster.scale(desired, now=t + 1)
        pod_seconds += len(cluster.pods) + len(cluster.draining)
        waiting.append(cluster.ready)
        in_flight.append(cluster.unacked)
        replicas.append(cluster.replicas)
    return Run(autoscaler.label, waiting, in_flight, replicas, pod_seconds, busy_removed, below_floor, cluster.waits)


@dataclass(frozen=True)
class Metrics:
    label: str
    draining_after: int | None  # seconds after the spike starts: the peak before the first fall over TREND s
    peak_backlog: int
    peak_after: int
    under_10_after: int | None
    pod_seconds: int
    spike_pod_seconds: int  # from the spike's start until the backlog is under 10 again
    max_replicas: int
    busy_removed: int
    below_floor: int
    p95_wait: float
    max_wait: float


def measure(run: Run, scenario: Scenario) -> Metrics:
    start, b = scenario.spike_start, run.waiting
    falling = next((t for t in range(start + TREND, len(b)) if b[t - TREND] >= 10 and b[t] < b[t - TREND]), None)
    draining = None if falling is None else max(range(start, falling + 1), key=lambda t: b[t])  # its last peak
    peak = max(range(start, len(b)), key=lambda t: b[t])
    under_10 = next((t for t in range(peak, len(b)) if b[t] < 10), None)
    spike_end = under_10 if under_10 is not None else len(b)
    waits = sorted(run.waits)
    return Metrics(
        label=run.label,
        draining_after=None if draining is None else draining - start,
        peak_backlog=b[peak], peak_after=peak - start,
        under_10_after=None if under_10 is None else under_10 - start,
        pod_seconds=run.pod_seconds,
        spike_pod_seconds=sum(run.replicas[start:spike_end]),
        max_replicas=max(run.replicas), busy_removed=run.busy_removed, below_floor=run.below_floor,
        p95_wait=waits[int(0.95 * (len(waits) - 1))], max_wait=waits[-1],
    )


COLUMNS = [
    ("autoscaler", 34, lambda m: m.label),
    ("drain starts", 12, lambda m: _seconds(m.draining_after)),
    ("peak backlog", 12, lambda m: f"{m.peak_backlog:,} @{m.peak_after}s"),
    ("under 10", 9, lambda m: _seconds(m.under_10_after)),
    ("pod-seconds", 11, lambda m: f"{m.pod_seconds:,}"),
    ("in spike", 8, lambda m: f"{m.spike_pod_seconds:,}"),
    ("max pods", 8, lambda m: str(m.max_replicas)),
    ("busy removed", 12, lambda m: str(m.busy_removed)),
    ("below floor", 11, lambda m: str(m.below_floor)),
    ("p95 wait", 8, lambda m: f"{m.p95_wait:.0f} s"),
    ("max wait", 8, lambda m: f"{m.max_wait:.0f} s"),
]


def _seconds(value: int | None) -> str:
    return "never" if value is None else f"{value} s"


def table(metrics: list[Metrics]) -> str:
    head = "  ".join(f"{name:<{width}}" if i == 0 else f"{name:>{width}}" for i, (name, width, _) in enumerate(COLUMNS))
    rows = ["  ".join(f"{get(m):<{w}}" if i == 0 else f"{get(m):>{w}}" for i, (_, w, get) in enumerate(COLUMNS))
            for m in metrics]
    return "\n".join([head, "-" * len(head), *rows])


# --- the contenders, configured ---------------------------------------------------------------


def warren_spec(scenario: Scenario, *, drain_seconds: float, down_window: float) -> Spec:
    return Spec(deployment="worker", queue="work", min_replicas=scenario.min_replicas,
                max_replicas=scenario.max_replicas, target=DrainTarget(drain_seconds), prefetch=1,
                poll_seconds=5.0, scale_up=Behavior(0.0, None), scale_down=Behavior(down_window, None))


def contenders(scenario: Scenario, args: argparse.Namespace) -> list[Autoscaler]:
    spec = warren_spec(scenario, drain_seconds=args.drain_seconds, down_window=args.down_window)
    ours = f"warren (drain {args.drain_seconds:g} s, down {args.down_window:g} s)"
    low, high = scenario.min_replicas, scenario.max_replicas
    return [
        WarrenAutoscaler(ours, spec),
        WarrenAutoscaler("warren, publish rate withheld", spec, withhold_publish_rate=True),
        KedaHpa("keda default (HPA 15 s, live)", low, high),
        KedaHpa("keda, useCachedMetrics (30 s)", low, high, cache_seconds=30),
        # Tuned as a user would for this job: KEDA polling every 5 s (useCachedMetrics), the HPA's scale-down window
        # as Warren's (60 s) and no scale-up step limit (Warren's has none here either); the
        # HPA itself still syncs every 15 s (a kube-controller-manager flag, not the user's).
        KedaHpa("keda tuned, QueueLength 20", low, high, cache_seconds=5, down_window=60, scale_up_unlimited=True),
        # MessageRate: replicas for the publish rate at `value` 2 msg/s each, one worker's rate.
        KedaHpa("keda tuned, MessageRate 2/s", low, high, messages_per_replica=1 / scenario.service_seconds,
                mode="MessageRate", cache_seconds=5, down_window=60, scale_up_unlimited=True),
    ]


def sweep(scenario: Scenario, args: argparse.Namespace) -> list[Metrics]:
    """Warren with other drain targets and scale-down windows: which knob moves which number."""
    out = []
    for drain, window in [(10, 60), (20, 60), (30, 60), (60, 60), (30, 30), (30, 120), (30, 300)]:
        spec = warren_spec(scenario, drain_seconds=drain, down_window=window)
        run = simulate(WarrenAutoscaler(f"warren drain {drain} s, down {window} s", spec), scenario, seed=args.seed)
        out.append(measure(run, scenario))
    return out


def plot(runs: list[Run], scenario: Scenario, path: Path, *, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 8), sharex=True, constrained_layout=True)
    styles = ["-", "--", "-", ":", "-.", "-."]
    colors = ["tab:blue", "tab:cyan", "tab:red", "tab:orange", "tab:green", "tab:purple"]
    for run, style, color in zip(runs, styles, colors, strict=False):
        seconds = range(len(run.waiting))
        top.plot(seconds, run.waiting, style, color=color, label=run.label, linewidth=1.6)
        bottom.step(seconds, run.replicas, style, color=color, label=run.label, where="post", linewidth=1.6)
    for axis in (top, bottom):
        axis.axvspan(scenario.spike_start, scenario.spike_end, color="0.92", zorder=0)
        axis.grid(True, alpha=0.3)
    top.set_ylabel("backlog: ready messages")
    top.set_title(f"{name}: {scenario.spike_rate:g} msg/s for {scenario.spike_seconds} s (shaded), "
                  f"{scenario.quiet_rate:g} msg/s otherwise; 0.5 s per message, pods start in "
                  f"{scenario.pod_start_seconds} s")
    top.legend(loc="upper right")
    bottom.set_ylabel("replicas (Deployment)")
    bottom.set_xlabel("seconds")
    bottom.set_xlim(0, scenario.duration)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.autoscale", description=__doc__.split("\n")[0])
    parser.add_argument("--drain-seconds", type=float, default=30.0, help="Warren's drainSeconds target")
    parser.add_argument("--down-window", type=float, default=60.0, help="Warren's scale-down window, seconds")
    parser.add_argument("--seed", type=int, default=1, help="seeds arrivals, dispatch and pod-removal tie-breaks")
    parser.add_argument("--sweep", action="store_true", help="also run Warren with other drain targets and windows")
    parser.add_argument("--even", action="store_true", help="evenly spread arrivals instead of a Poisson process")
    return parser.parse_args(argv)


SCENARIOS = {
    "spike": Scenario(),
    # the spike's rate held for 10 minutes: a queue that keeps up has nothing ready to count
    "plateau": Scenario(spike_seconds=600, after_seconds=300),
}


@dataclass(frozen=True)
class Outcome:
    name: str
    scenario: Scenario
    runs: list[Run]
    metrics: list[Metrics]
    logs: dict[str, list[str]]


def run_scenario(name: str, args: argparse.Namespace) -> Outcome:
    scenario = replace(SCENARIOS[name], poisson=not args.even)
    autoscalers = contenders(scenario, args)
    runs = [simulate(a, scenario, seed=args.seed) for a in autoscalers]
    logs = {a.label: a.log for a in autoscalers if isinstance(a, WarrenAutoscaler)}
    return Outcome(name, scenario, runs, [measure(run, scenario) for run in runs], logs)


def describe(outcome: Outcome) -> str:
    sc = outcome.scenario
    return (f"{outcome.name}: {sc.quiet_rate:g} msg/s, {sc.spike_rate:g} msg/s from t={sc.spike_start} for "
            f"{sc.spike_seconds} s, then {sc.quiet_rate:g} msg/s to t={sc.duration}. Times are seconds after "
            f"t={sc.spike_start}; backlog = ready messages; pod-seconds over the whole run, 'in spike' "
            f"from t={sc.spike_start} until the backlog is under 10")


def write_results(outcomes: list[Outcome], args: argparse.Namespace) -> list[Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    decisions = RESULTS / "autoscale-decisions.txt"
    decisions.write_text("\n".join(line for o in outcomes for label, log in o.logs.items()
                                   for line in [f"# {o.name}: {label}", *log, ""]))
    data = RESULTS / "autoscale.json"
    data.write_text(json.dumps({"args": vars(args), "scenarios": {
        o.name: {"scenario": asdict(o.scenario), "metrics": [asdict(m) for m in o.metrics]} for o in outcomes}},
        indent=2))
    written = [data, decisions]
    try:
        for o in outcomes:
            png = RESULTS / ("autoscale.png" if o.name == "spike" else f"autoscale-{o.name}.png")
            plot(o.runs, o.scenario, png, name=o.name)
            written.insert(0, png)
    except ModuleNotFoundError:
        print("\nno plot: matplotlib is not installed (pip install matplotlib)")
    return written


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outcomes = [run_scenario(name, args) for name in SCENARIOS]
    for outcome in outcomes:
        print(f"{describe(outcome)}\n\n{table(outcome.metrics)}\n")
    if args.sweep:
        spike = replace(SCENARIOS["spike"], poisson=not args.even)
        print(f"Warren's knobs, spike scenario:\n\n{table(sweep(spike, args))}\n")
    written = write_results(outcomes, args)
    print("written: " + "\n         ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
