"""Latency benchmark: ``python -m bench.latency [--quick] [--repeat K] ...`` from the repo root.

Starts one private RabbitMQ node and, for each scenario (prefetch 1 at 500 msg/s, prefetch 50 at
2,000 msg/s), one consumer of each kind, each on a durable quorum queue of its own, with a no-op
handler: the Warren worker (``Worker``, a one-task pool), raw pika (BlockingConnection, one ack per
message) and Celery (prefork, ``task_acks_late``). One paced raw pika publisher with confirms feeds
them all, one consumer at a time: a short warm-up each, then K measured runs, round-robin (the
order rotating each round) so slow drift hits every consumer alike.

Per message (see ``bench._latency_record``, ``bench._latency_consumer``, ``bench._celery_latency``):

- publish: ``time.monotonic()`` just before ``basic_publish``, at the message's slot of a fixed
  schedule (``bench._paced_publisher``);
- handler start: the first statement of the handler;
- ack: just after the consumer handed the ack frame to the socket;
- confirm: when the publisher got the broker's confirm (the broker's own share, for reference).

Each run gives p50/p95/p99 of (handler start - publish) and (ack - publish); the table shows the
median over the K runs and their range. Prints the Warren / raw pika ratios against the target
(at most 1.2x at every percentile) and writes ``bench/results/latency.json``. Exits 0 even when a
target is missed; 1 if a case failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import _amqp, _cases, _celery_app, _celery_latency, _cpu, _report, throughput
from bench._cases import Env
from bench._children import CaseFailed, Child
from bench._latency_consumer import POOL_NAME, TASK
from bench._latency_record import RecordFile
from bench._paced_publisher import Prepared, Published, publish_paced
from bench._session import RESULTS, entry_point, private_broker
from warren.broker.session import to_properties
from warren.producer import task_message
from warren.topology import Names

KINDS = {"warren": "warren worker", "pika": "raw pika", "celery": "celery"}
PERCENTILES = (50, 95, 99)
METRICS = {"start": "publish -> handler start", "ack": "publish -> ack", "confirm": "publish -> confirm"}
TARGET = 1.2  # Warren over raw pika, at most, for every percentile of "start" and "ack"
SATURATED = 0.95  # a consumer acking slower than this share of the publish rate fell behind
PAUSE_S = 0.3  # between runs: the consumer idles as it would between bursts
POLL_S = 0.02


@dataclass(frozen=True)
class Scenario:
    prefetch: int
    rate: float  # messages per second
    messages: int  # per measured run
    warmup: int  # messages of the unmeasured run each consumer gets first

    @property
    def key(self) -> str:
        return f"p{self.prefetch}-{self.rate:.0f}"

    @property
    def title(self) -> str:
        return f"prefetch {self.prefetch}, {self.rate:,.0f} msg/s"


@dataclass(frozen=True)
class Run:
    """One measured run of one consumer: its percentiles in milliseconds, per metric."""

    messages: int
    percentiles: dict[str, dict[int, float]]
    max_ms: dict[str, float]
    offered_rate: float  # messages / (last publish - first publish)
    consumed_rate: float  # messages / (last ack - first publish)
    lag_p99_ms: float  # how late the publisher was against its schedule
    lag_max_ms: float
    cpu_ms: dict[str, float]  # CPU per message: the consumer (all its processes), the broker, the publisher
    machine_busy: float  # share of both CPUs busy during the run, whoever used them

    @property
    def saturated(self) -> bool:
        return self.consumed_rate < SATURATED * self.offered_rate


@dataclass
class Case:
    kind: str
    label: str
    scenario: Scenario
    runs: list[Run] = field(default_factory=list)
    error: str | None = None

    def values(self, metric: str, p: int) -> list[float]:
        return [r.percentiles[metric][p] for r in self.runs]

    def median(self, metric: str, p: int) -> float | None:
        values = self.values(metric, p)
        return statistics.median(values) if values else None

    @property
    def saturated_runs(self) -> int:
        return sum(r.saturated for r in self.runs)

    def median_cpu(self, who: str) -> float:
        return statistics.median(r.cpu_ms[who] for r in self.runs)


@dataclass
class Consumer:
    """A running consumer: where to publish to it and how to read what it recorded."""

    case: Case
    queue: str
    child: Child
    records: RecordFile
    exchange: str
    routing_key: str
    prepare: Callable[[str], Prepared]


# -- consumers ------------------------------------------------------------------------------------
def _warren_message(names: Names, message_id: str) -> Prepared:
    message = task_message(names, POOL_NAME, TASK, {}, message_id=message_id)
    return Prepared(message_id, message.body, to_properties(message))


@contextlib.contextmanager
def _warren_topology_consumer(env: Env, case: Case, records: Path) -> Iterator[Consumer]:
    """The Warren worker or the raw pika consumer, on the latency pool's work queue of a fresh
    namespace (the same quorum queue and arguments the worker declares), fed Warren's messages."""
    prefetch = case.scenario.prefetch
    with _cases._warren_queue(env, prefetch, pool="bench._latency_consumer:pool") as (settings, queue):
        names = Names(settings.namespace)
        target = ["--namespace", settings.namespace] if case.kind == "warren" else ["--queue", queue]
        argv = [case.kind, "--url", env.url, "--records", str(records), "--prefetch", str(prefetch), *target]
        log = env.logs / f"latency-{case.kind}-p{prefetch}.log"
        with Child.python_module(case.label, "bench._latency_consumer", *argv, log_path=log) as child:
            yield Consumer(case, queue, child, RecordFile(records), names.tasks, POOL_NAME,
                           lambda message_id: _warren_message(names, message_id))
        _check_drained(env, case, queue)


@contextlib.contextmanager
def _celery_consumer(env: Env, case: Case, records: Path) -> Iterator[Consumer]:
    prefetch = case.scenario.prefetch
    queue = f"bench{secrets.token_hex(3)}.celery"
    app = _celery_app.make_app(env.url, queue)
    try:
        with app.connection_for_write() as connection:
            app.amqp.queues[queue](connection.default_channel).declare()
        child = _cases._celery_child(env, queue, records, prefetch, app="bench._celery_latency",
                                     log_name="latency-celery")
        with child:
            yield Consumer(case, queue, child, RecordFile(records), queue, queue, _celery_message)
        _check_drained(env, case, queue)
    finally:
        app.close()
        _amqp.delete(env.url, queues=[queue], exchanges=[queue])


def _check_drained(env: Env, case: Case, queue: str) -> None:
    """Once the consumer has stopped, nothing may be left in its queue (every message was acked)."""
    try:
        _amqp.ensure_drained(env.url, queue, len(case.runs) * case.scenario.messages)
    except CaseFailed as e:
        case.error = case.error or str(e)


def _celery_message(message_id: str) -> Prepared:
    return Prepared(message_id, *_celery_latency.task_message(message_id))


CONSUMERS = {"warren": _warren_topology_consumer, "pika": _warren_topology_consumer, "celery": _celery_consumer}


# -- one run --------------------------------------------------------------------------------------
def percentile(ordered: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def measure(env: Env, consumer: Consumer, count: int, timeout: float, broker_pid: int) -> Run:
    """Publish ``count`` messages on the schedule, wait for every ack, return the percentiles."""
    ids = [uuid.uuid4().hex for _ in range(count)]
    messages = [consumer.prepare(message_id) for message_id in ids]
    rate = consumer.case.scenario.rate
    pgid = consumer.child.pid or 0
    machine, consumer_cpu, broker_cpu = _cpu.MachineTimes.now(), _cpu.group_seconds(pgid), \
        _cpu.process_seconds(broker_pid)
    publisher_cpu = time.process_time()
    published = publish_paced(env.url, consumer.exchange, consumer.routing_key, messages, rate=rate, timeout=timeout)
    publisher_cpu = time.process_time() - publisher_cpu
    _wait_for_acks(consumer, ids, timeout)
    cpu_ms = {
        "consumer": (_cpu.group_seconds(pgid) - consumer_cpu) * 1000 / count,
        "broker": (_cpu.process_seconds(broker_pid) - broker_cpu) * 1000 / count,
        "publisher": publisher_cpu * 1000 / count,
    }
    busy = _cpu.MachineTimes.now().busy_share_since(machine)
    try:
        return _summarise(consumer.records, published, cpu_ms, busy)
    finally:
        consumer.records.forget(ids)


def _wait_for_acks(consumer: Consumer, ids: list[str], timeout: float) -> None:
    records, deadline = consumer.records, time.monotonic() + timeout
    while True:
        records.read_new()
        if len(records.acks) >= len(ids) and all(i in records.acks for i in ids):
            break
        consumer.child.check_running()
        if time.monotonic() > deadline:
            missing = sum(i not in records.acks for i in ids)
            raise CaseFailed(f"{consumer.case.label}: {missing} of {len(ids)} messages not acked after "
                             f"{timeout:.0f}s\n{consumer.child.log_tail()}")
        time.sleep(POLL_S)
    if records.duplicates:
        raise CaseFailed(f"{consumer.case.label}: {records.duplicates} messages started or acked twice "
                         f"(redelivered?)\n{consumer.child.log_tail()}")
    no_start = [i for i in ids if i not in records.starts]
    if no_start:
        raise CaseFailed(f"{consumer.case.label}: {len(no_start)} messages acked without a recorded start")


def _summarise(records: RecordFile, published: Published, cpu_ms: dict[str, float], busy: float) -> Run:
    pairs = list(zip(published.message_ids, published.published_at, published.confirmed_at, strict=True))
    samples = {
        "start": sorted((records.starts[i] - p) * 1000 for i, p, _ in pairs),
        "ack": sorted((records.acks[i] - p) * 1000 for i, p, _ in pairs),
        "confirm": sorted((c - p) * 1000 for _, p, c in pairs),
    }
    first, last = published.published_at[0], published.published_at[-1]
    n = len(pairs)
    last_ack = max(records.acks[i] for i, _, _ in pairs)
    lags = sorted(published.lag)
    return Run(
        messages=n,
        percentiles={m: {p: percentile(v, p) for p in PERCENTILES} for m, v in samples.items()},
        max_ms={m: v[-1] for m, v in samples.items()},
        offered_rate=(n - 1) / (last - first) if last > first else float("inf"),
        consumed_rate=n / (last_ack - first),
        lag_p99_ms=percentile(lags, 99) * 1000,
        lag_max_ms=lags[-1] * 1000,
        cpu_ms=cpu_ms,
        machine_busy=busy,
    )


# -- a scenario -----------------------------------------------------------------------------------
def run_scenario(env: Env, scenario: Scenario, kinds: list[str], repeat: int, broker_pid: int) -> list[Case]:
    """Start one consumer per kind, warm each up, then ``repeat`` rounds of one run each."""
    cases = [Case(kind, KINDS[kind], scenario) for kind in kinds]
    timeout = max(60.0, 10 * scenario.messages / scenario.rate)
    print(f"\n{scenario.title}: starting {', '.join(c.label for c in cases)}", flush=True)
    with contextlib.ExitStack() as stack:
        consumers: list[Consumer] = []
        for case in cases:
            records = env.logs / f"latency-{case.kind}-p{scenario.prefetch}.records"
            records.unlink(missing_ok=True)
            try:
                consumers.append(stack.enter_context(CONSUMERS[case.kind](env, case, records)))
            except Exception as e:
                case.error = f"{type(e).__name__}: {e}"
        for consumer in list(consumers):
            try:
                _amqp.wait_for_consumer(env.url, consumer.queue, consumer.child, timeout=120)
                measure(env, consumer, scenario.warmup, timeout, broker_pid)  # warm-up, not kept
                time.sleep(PAUSE_S)
            except Exception as e:
                _failed(consumer, e, "warm-up")
                consumers.remove(consumer)
        for round_no in range(repeat):
            shift = round_no % len(consumers) if consumers else 0
            for consumer in consumers[shift:] + consumers[:shift]:
                if consumer.case.error is not None:
                    continue
                print(f"[{round_no + 1}/{repeat}] {scenario.title:<24} {consumer.case.label:<14} ", end="", flush=True)
                try:
                    run = measure(env, consumer, scenario.messages, timeout, broker_pid)
                except Exception as e:
                    _failed(consumer, e, "run")
                    continue
                consumer.case.runs.append(run)
                print(_run_line(run), flush=True)
                time.sleep(PAUSE_S)
    return cases


def _failed(consumer: Consumer, error: Exception, what: str) -> None:
    consumer.case.error = f"{what}: {type(error).__name__}: {error}"
    print(f"{consumer.case.label}: FAILED ({what}): {type(error).__name__}", flush=True)


def _run_line(run: Run) -> str:
    def ms(metric: str) -> str:
        p = run.percentiles[metric]
        return f"{p[50]:6.2f} {p[95]:6.2f} {p[99]:6.2f}"

    flag = f"  SATURATED: consumed {run.consumed_rate:,.0f} msg/s" if run.saturated else ""
    cpu = run.cpu_ms
    return (f"ms p50/p95/p99  start {ms('start')}   ack {ms('ack')}   confirm {ms('confirm')}   "
            f"cpu ms/msg {cpu['consumer']:.2f} {cpu['broker']:.2f} {cpu['publisher']:.2f}  "
            f"busy {run.machine_busy:4.0%}{flag}")


# -- the report -----------------------------------------------------------------------------------
def _cell(case: Case, metric: str, p: int) -> str:
    values = case.values(metric, p)
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} [{min(values):.2f}–{max(values):.2f}]"


def table(cases: list[Case]) -> str:
    scenario = cases[0].scenario
    runs = max((len(c.runs) for c in cases), default=0)
    lines = [f"{scenario.title}: {runs} runs x {scenario.messages:,} messages each; milliseconds, median of "
             "the runs' percentiles [lowest–highest run]"]
    rows = [("case", "latency", *(f"p{p}" for p in PERCENTILES))]
    for case in cases:
        if case.error is not None and not case.runs:
            rows.append((case.label, "ERROR", *("-" for _ in PERCENTILES)))
            continue
        for i, (metric, name) in enumerate(METRICS.items()):
            rows.append((case.label if i == 0 else "", name, *(_cell(case, metric, p) for p in PERCENTILES)))
    lines.append(_report.align(rows, left=2))
    if any(c.runs for c in cases):
        lines.append("medians of runs: CPU ms per message of consumer / broker / publisher; share of both CPUs "
                     "busy (anyone's); publisher's p99 lag behind its schedule")
        for case in cases:
            if case.runs:
                busy = statistics.median(r.machine_busy for r in case.runs)
                lag = statistics.median(r.lag_p99_ms for r in case.runs)
                lines.append(f"  {case.label:<14} {case.median_cpu('consumer'):.3f} / {case.median_cpu('broker'):.3f}"
                             f" / {case.median_cpu('publisher'):.3f} ms   busy {busy:3.0%}   lag {lag:.2f} ms")
    for case in cases:
        if case.saturated_runs:
            rate = statistics.median(r.consumed_rate for r in case.runs)
            lines.append(f"{case.label}: SATURATED in {case.saturated_runs} of {len(case.runs)} runs (acked "
                         f"{rate:,.0f} msg/s of {scenario.rate:,.0f}): its latency is the backlog's and grows with "
                         "the run's length")
    return "\n".join(lines)


@dataclass(frozen=True)
class Ratio:
    scenario: Scenario
    metric: str
    numerator: str
    denominator: str
    values: dict[int, float | None]
    target: float | None

    def met(self, p: int) -> bool | None:
        value = self.values[p]
        return None if value is None or self.target is None else value <= self.target


def ratios(all_cases: list[list[Case]], numerator: str, denominator: str, target: float | None) -> list[Ratio]:
    result = []
    for cases in all_cases:
        by_kind = {c.kind: c for c in cases}
        top, bottom = by_kind.get(numerator), by_kind.get(denominator)
        for metric in ("start", "ack"):
            values: dict[int, float | None] = {}
            for p in PERCENTILES:
                a = None if top is None else top.median(metric, p)
                b = None if bottom is None else bottom.median(metric, p)
                values[p] = None if a is None or not b else a / b
            result.append(Ratio(cases[0].scenario, metric, numerator, denominator, values, target))
    return result


def ratios_text(title: str, rows: list[Ratio]) -> str:
    def cell(r: Ratio, p: int) -> str:
        value = r.values[p]
        if value is None:
            return "n/a"
        met = r.met(p)
        return f"{value:.2f}x" + ("" if met is None else " met" if met else " MISSED")

    table_rows = [("scenario", "latency", *(f"p{p}" for p in PERCENTILES))]
    table_rows += [(r.scenario.title, METRICS[r.metric], *(cell(r, p) for p in PERCENTILES)) for r in rows]
    return f"{title}\n{_report.align(table_rows, left=2)}"


def as_json(all_cases: list[list[Case]], all_ratios: list[Ratio], context: dict[str, Any]) -> dict[str, Any]:
    def run(r: Run) -> dict[str, Any]:
        return {
            "messages": r.messages,
            "ms": {m: {f"p{p}": round(v, 3) for p, v in ps.items()} | {"max": round(r.max_ms[m], 3)}
                   for m, ps in r.percentiles.items()},
            "offered_msg_per_s": round(r.offered_rate, 1), "consumed_msg_per_s": round(r.consumed_rate, 1),
            "saturated": r.saturated,
            "cpu_ms_per_message": {k: round(v, 4) for k, v in r.cpu_ms.items()},
            "machine_busy_share": round(r.machine_busy, 3),
            "publisher_lag_ms": {"p99": round(r.lag_p99_ms, 3), "max": round(r.lag_max_ms, 3)},
        }

    def summary(c: Case) -> dict[str, Any]:
        return {m: {f"p{p}": None if not (v := c.values(m, p)) else
                    {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3)}
                    for p in PERCENTILES} for m in METRICS}

    return {
        **context,
        "scenarios": [
            {
                "key": cases[0].scenario.key, "prefetch": cases[0].scenario.prefetch,
                "rate_msg_per_s": cases[0].scenario.rate, "messages_per_run": cases[0].scenario.messages,
                "warmup_messages": cases[0].scenario.warmup,
                "cases": [{"kind": c.kind, "case": c.label, "error": c.error, "median_of_runs": summary(c),
                           "runs": [run(r) for r in c.runs]} for c in cases],
            }
            for cases in all_cases
        ],
        "ratios": [
            {"scenario": r.scenario.key, "latency": r.metric, "of": r.numerator, "over": r.denominator,
             "target_at_most": r.target,
             **{f"p{p}": None if (v := r.values[p]) is None else round(v, 3) for p in PERCENTILES},
             "met": None if r.target is None or None in r.values.values() else all(r.met(p) for p in PERCENTILES)}
            for r in all_ratios
        ],
    }


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n")[0])
    parser.add_argument("--rate-p1", type=throughput._positive, default=500, help="msg/s of the prefetch-1 scenario")
    parser.add_argument("--rate-p50", type=throughput._positive, default=2_000,
                        help="msg/s of the prefetch-50 scenario")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one measured run")
    parser.add_argument("--warmup", type=float, default=1.0, help="length of each consumer's warm-up run")
    parser.add_argument("--repeat", type=throughput._positive, default=7, metavar="K",
                        help="measured runs per consumer and scenario; the table shows their median")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 short runs each (under a minute)")
    parser.add_argument("--only", type=lambda s: s.split(","), default=list(KINDS),
                        help=f"comma-separated subset of: {','.join(KINDS)}")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(KINDS)
    if unknown:
        parser.error(f"--only: unknown consumer(s) {', '.join(sorted(unknown))}")
    args.only = [k for k in KINDS if k in args.only]
    if args.quick:
        args.seconds, args.warmup, args.repeat = 1.0, 0.3, 2
    if args.seconds <= 0 or args.warmup <= 0:
        parser.error("--seconds and --warmup must be positive")
    return args


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    return [
        Scenario(prefetch, rate, max(1, round(rate * args.seconds)), max(1, round(rate * args.warmup)))
        for prefetch, rate in ((1, args.rate_p1), (50, args.rate_p50))
    ]


def context(args: argparse.Namespace, rabbitmq_version: str, load: tuple[str, str], seconds: float) -> dict[str, Any]:
    return {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.latency " + " ".join(sys.argv[1:]),
        "wall_seconds": round(seconds, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "rabbitmq": rabbitmq_version,
                    "pika": metadata.version("pika"), "celery": metadata.version("celery"),
                    "load_average_before": load[0], "load_average_after": load[1]},
        "parameters": {"repeat": args.repeat, "seconds_per_run": args.seconds, "warmup_seconds": args.warmup,
                       "queue": "durable quorum queue, one per consumer", "target": f"warren / raw pika <= {TARGET}",
                       "celery": celery_setup(), "clock": "time.monotonic() (CLOCK_MONOTONIC, system-wide)"},
    }


def celery_setup() -> str:
    return (f"prefork --concurrency {_cases.CELERY_CONCURRENCY} --prefetch-multiplier P (basic.qos "
            f"{_cases.CELERY_CONCURRENCY}xP), task_acks_late=True, no result backend; fed protocol-2 messages by "
            "the same paced raw pika publisher with confirms")


def _main(args: argparse.Namespace) -> int:
    began = time.monotonic()
    with private_broker() as bench:
        env = Env(bench.broker.amqp_url, bench.logs, window=0)  # no window: the paced publisher has none
        broker_pid = int(bench.broker.pid_file.read_text().strip())
        all_cases = [run_scenario(env, s, args.only, args.repeat, broker_pid) for s in scenarios(args)]
        load = bench.load
    wall = time.monotonic() - began
    print(f"\nRabbitMQ {bench.version}, {os.cpu_count()} CPUs, {wall:.0f} s in all, load average {load[0]} before "
          f"and {load[1]} after (other work on the machine skews the numbers)")
    print(f"Celery: {celery_setup()}")
    if args.quick:
        print("--quick: a smoke run; two short runs say little about the tail")
    for cases in all_cases:
        print()
        print(table(cases))
    against_pika = ratios(all_cases, "warren", "pika", TARGET)
    against_celery = ratios(all_cases, "warren", "celery", None)
    print()
    print(ratios_text(f"warren worker / raw pika (medians; target: at most {TARGET}x at every percentile):",
                      against_pika))
    print()
    print(ratios_text("warren worker / celery (medians; no target):", against_celery))
    errors = [f"ERROR in {c.label} ({c.scenario.title}): {c.error}" for cases in all_cases for c in cases if c.error]
    if errors:
        print("\n" + "\n".join(errors))
    out = RESULTS / "latency.json"
    _report.write_json(out, as_json(all_cases, against_pika + against_celery, context(args, bench.version, load, wall)))
    print(f"\nwritten: {out}")
    return 1 if errors else 0


main = entry_point(parse_args, _main)


if __name__ == "__main__":
    sys.exit(main())
