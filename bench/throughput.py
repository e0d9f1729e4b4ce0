"""Throughput benchmark: ``python -m bench.throughput [--quick] [--repeat K] ...`` from the repo root.

Starts one private RabbitMQ node and runs every case against it, one at a time:

- end to end on a durable quorum queue with a no-op handler, at prefetch 1 and 50: the Warren
  worker (``Producer.publish_batch`` feeding ``Worker``, pool ``selftest``, task ``noop``), the same
  with its Prometheus metrics on (``WARREN_METRICS_PORT``, scraped once a second), raw pika
  (pipelined confirms feeding a BlockingConnection consumer), and Celery (``send_task`` feeding a
  prefork worker with ``task_acks_late``); throughput = N / (first publish -> N-th ack);
- batch publishing with no consumer: ``Producer.publish_batch`` vs raw pika pipelined confirms.

Prints a table, the ratios and whether the targets are met, and writes
``bench/results/throughput.json``. Exits 0 even when a target is missed; 1 if a case failed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from bench import _cases, _report
from bench._cases import Env, Measurement
from bench._report import Outcome
from bench._session import RESULTS, entry_point, private_broker

Runner = Callable[[Env], Measurement]

WORKERS: dict[str, tuple[str, Callable[[Env, int, int], Measurement]]] = {
    "warren": ("warren worker", _cases.warren_worker),
    "warren-metrics": ("warren worker, metrics on", _cases.warren_worker_with_metrics),
    "pika": ("raw pika", _cases.pika_worker),
    "celery": ("celery", _cases.celery_worker),
}
PUBLISHERS: dict[str, tuple[str, Callable[[Env, int], Measurement]]] = {
    "warren-batch": ("warren batch publish", _cases.warren_batch),
    "pika-batch": ("raw pika batch publish", _cases.pika_batch),
}
KINDS = (*WORKERS, *PUBLISHERS)


@dataclass(frozen=True)
class Spec:
    key: str
    kind: str
    label: str
    prefetch: int | None
    messages: int
    run: Runner


def _positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--messages-p1", type=_positive, default=5_000, help="messages per prefetch-1 case")
    parser.add_argument("--messages-p50", type=_positive, default=50_000,
                        help="messages per prefetch-50 case of Warren and raw pika")
    parser.add_argument("--celery-messages-p50", type=_positive, default=10_000,
                        help="messages for Celery at prefetch 50 (it is ~10x slower)")
    parser.add_argument("--messages-batch", type=_positive, default=150_000, help="messages per batch publish case")
    parser.add_argument("--window", type=_positive, default=1_000,
                        help="unconfirmed messages in flight when publishing")
    parser.add_argument("--repeat", type=_positive, default=1, metavar="K", help="run each case K times, keep the best")
    parser.add_argument("--quick", action="store_true", help="smoke run with few messages (a few seconds per case)")
    parser.add_argument("--only", type=lambda s: s.split(","), default=list(KINDS),
                        help=f"comma-separated subset of: {','.join(KINDS)}")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(KINDS)
    if unknown:
        parser.error(f"--only: unknown case(s) {', '.join(sorted(unknown))}")
    if args.quick:
        args.messages_p1, args.messages_p50, args.celery_messages_p50, args.messages_batch = 300, 2_000, 1_000, 5_000
    return args


def plan(args: argparse.Namespace) -> list[Spec]:
    def messages(kind: str, prefetch: int) -> int:
        if prefetch == 1:
            return args.messages_p1
        return args.celery_messages_p50 if kind == "celery" else args.messages_p50

    specs = []
    for prefetch in (1, 50):
        for kind, (label, worker) in WORKERS.items():
            n = messages(kind, prefetch)
            specs.append(Spec(f"{kind}-p{prefetch}", kind, label, prefetch, n, _bound_worker(worker, prefetch, n)))
    for kind, (label, publisher) in PUBLISHERS.items():
        n = args.messages_batch
        specs.append(Spec(kind, kind, label, None, n, _bound_publisher(publisher, n)))
    return [s for s in specs if s.kind in args.only]


def _bound_worker(worker: Callable[[Env, int, int], Measurement], prefetch: int, count: int) -> Runner:
    return lambda env: worker(env, prefetch, count)


def _bound_publisher(publisher: Callable[[Env, int], Measurement], count: int) -> Runner:
    return lambda env: publisher(env, count)


def run_all(env: Env, specs: list[Spec], repeat: int) -> dict[str, Outcome]:
    """Every case ``repeat`` times, round-robin so slow drift hits all cases alike."""
    outcomes = {s.key: Outcome(s.key, s.label, s.prefetch, s.messages) for s in specs}
    for round_no in range(1, repeat + 1):
        for spec in specs:
            outcome = outcomes[spec.key]
            if outcome.error is not None:
                continue
            print(f"[{round_no}/{repeat}] {spec.label:<24} prefetch {spec.prefetch or '-':<3} "
                  f"{spec.messages:>7,} messages ... ", end="", flush=True)
            try:
                m = spec.run(env)
            except Exception as e:  # report it and go on with the other cases
                outcome.error = f"{type(e).__name__}: {e}"
                print("FAILED")
                continue
            outcome.runs.append(m)
            print(f"{m.seconds:6.2f} s  {m.rate:9,.0f} msg/s  (published in {m.publish_seconds:.2f} s)")
    return outcomes


def context(args: argparse.Namespace, rabbitmq_version: str, load: tuple[str, str]) -> dict[str, object]:
    return {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "rabbitmq": rabbitmq_version,
                    "pika": metadata.version("pika"), "celery": metadata.version("celery"),
                    "load_average_before": load[0], "load_average_after": load[1]},
        "parameters": {"window": args.window, "repeat": args.repeat, "queue": "durable quorum queue",
                       "celery": celery_setup()},
    }


def celery_setup() -> str:
    return (f"prefork --concurrency {_cases.CELERY_CONCURRENCY} --prefetch-multiplier P (so basic.qos "
            f"{_cases.CELERY_CONCURRENCY}xP on its one consumer, global QoS off for quorum queues), "
            "task_acks_late=True, no result backend, published with send_task without publisher confirms "
            "(Celery's default)")


def _main(args: argparse.Namespace) -> int:
    with private_broker() as bench:
        outcomes = run_all(Env(bench.broker.amqp_url, bench.logs, args.window), plan(args), args.repeat)
        load = bench.load
    print(f"\nRabbitMQ {bench.version}, {os.cpu_count()} CPUs, best of {args.repeat}, load average {load[0]} "
          f"before and {load[1]} after (other work on the machine skews the numbers)")
    print(f"Celery: {celery_setup()}")
    if args.quick:
        print("--quick: a smoke run; cases this short say little about throughput")
    print()
    print(_report.table(outcomes))
    print()
    print(_report.ratios_text(outcomes))
    errors = _report.errors_text(outcomes)
    if errors:
        print("\n" + errors)
    out = RESULTS / "throughput.json"
    _report.write_json(out, _report.as_json(outcomes, context(args, bench.version, load)))
    print(f"\nwritten: {out}")
    return 1 if errors else 0


main = entry_point(parse_args, _main)


if __name__ == "__main__":
    sys.exit(main())
