"""The price of replication: ``python -m bench.cluster [--quick]`` from the repo root (Docker).

Runs the same cases on a one-node and on a three-node RabbitMQ cluster of the test broker image
(``warren.testing.cluster.DockerCluster``: quorum queues with a member on every node), one after
the other in one run:

- publish-confirm latency: ``Producer.publish`` one message at a time, each waiting for its
  confirm (p50/p95/p99 over N publishes);
- batch publishing: ``Producer.publish_batch`` (pipelined confirms), no consumer;
- end to end: the Warren worker (prefetch 50, no-op handler) draining what ``publish_batch`` sends.

Clients connect to the first node; on three nodes every write is replicated to a majority before
it is confirmed. Prints a table and writes ``bench/results/cluster.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

from bench import _cases
from bench._cases import Env
from bench._report import align
from warren.producer import Producer
from warren.testing.cluster import DockerCluster

RESULTS = Path(__file__).resolve().parent / "results"
IMAGE = "warren-rabbitmq:dev"


def confirm_latencies(env: Env, count: int) -> list[float]:
    """Milliseconds from publish to confirm, one message at a time."""
    with _cases._warren_queue(env) as (settings, _queue), Producer(settings, name="bench-latency") as producer:
        producer.publish(_cases.POOL, _cases.TASK, {})  # connect first
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            producer.publish(_cases.POOL, _cases.TASK, {})
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run(size: int, args: argparse.Namespace, logs: Path) -> dict[str, float]:
    print(f"starting a {size}-node cluster ...", flush=True)
    with DockerCluster(image=args.image, size=size) as cluster:
        env = Env(url=cluster.nodes[0].amqp_url, logs=logs, window=1000)
        latencies = confirm_latencies(env, args.confirms)
        batch = max((_cases.warren_batch(env, args.messages) for _ in range(args.repeat)), key=lambda m: m.rate)
        worker = max((_cases.warren_worker(env, 50, args.messages) for _ in range(args.repeat)),
                     key=lambda m: m.rate)
    return {
        "confirm_p50_ms": percentile(latencies, 50),
        "confirm_p95_ms": percentile(latencies, 95),
        "confirm_p99_ms": percentile(latencies, 99),
        "confirm_mean_ms": statistics.fmean(latencies),
        "batch_publish_msg_s": batch.rate,
        "worker_prefetch50_msg_s": worker.rate,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer messages, one repetition")
    parser.add_argument("--image", default=IMAGE, help=f"the broker image (default {IMAGE}, built by make images)")
    args = parser.parse_args(argv)
    args.messages = 5_000 if args.quick else 30_000
    args.confirms = 200 if args.quick else 1_000
    args.repeat = 1 if args.quick else 2
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = {size: run(size, args, logs) for size in (1, 3)}

    rows = [("measure", "1 node", "3 nodes", "3 / 1")]
    measures = (
        ("confirm_p50_ms", "publish -> confirm p50, ms"),
        ("confirm_p95_ms", "publish -> confirm p95, ms"),
        ("confirm_p99_ms", "publish -> confirm p99, ms"),
        ("batch_publish_msg_s", "batch publish, msg/s"),
        ("worker_prefetch50_msg_s", "worker prefetch 50, msg/s"),
    )
    for key, label in measures:
        one, three = results[1][key], results[3][key]
        rows.append((label, f"{one:,.2f}" if key.endswith("_ms") else f"{one:,.0f}",
                     f"{three:,.2f}" if key.endswith("_ms") else f"{three:,.0f}", f"{three / one:.2f}x"))
    print()
    print(align(rows))
    print(f"\n{args.messages:,} messages per throughput case (best of {args.repeat}), {args.confirms:,} confirms; "
          "clients on the first node")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cluster.json").write_text(json.dumps(
        {"at": datetime.datetime.now(datetime.UTC).isoformat(), "image": args.image, "quick": args.quick,
         "nodes": {str(k): v for k, v in results.items()}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
