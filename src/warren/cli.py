"""The ``warren`` command: worker, publish, request, topology, dlq.

Pools are named as installed packages register them (the ``warren.pools`` entry points) or as
``package.module:attribute``.

Exit status: 0 success; 1 the broker refused or could not be reached; 2 bad configuration or
usage; 3 the broker's topology conflicts with ours.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from warren import dlq_command, logs, metrics, topology
from warren.config import Settings, load_settings
from warren.dlq import parse_duration
from warren.errors import ConfigError, TopologyError, WarrenError
from warren.worker.pool import Pool, load_pool, registered_pools

log = logging.getLogger("warren")

EXIT_BROKER = 1
EXIT_CONFIG = 2
EXIT_TOPOLOGY = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warren", description="Reliable RabbitMQ worker roles.")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="consume a pool's queue until SIGTERM")
    worker.add_argument("pool", help="an installed pool's name (see `warren pools`) or package.module:attribute")
    worker.add_argument("--exit-when-idle", type=_seconds, metavar="SECONDS",
                        help="exit 0 once the queue has been empty with nothing in flight this long (batch jobs)")

    publish = sub.add_parser("publish", help="publish a task, confirmed by the broker")
    publish.add_argument("pool")
    publish.add_argument("task_type")
    publish.add_argument("payload", nargs="?", default="{}", help="JSON payload, or - for standard input")
    publish.add_argument("--id", dest="message_id", help="message id (default: a new UUID)")
    publish.add_argument("--correlation-id")
    publish.add_argument("--count", type=int, default=1, help="publish this many copies as one confirmed batch")
    when = publish.add_mutually_exclusive_group()
    when.add_argument("--delay", type=_seconds, metavar="DURATION",
                      help="deliver after this long (30, 30s, 5m, 2h, 1d)")
    when.add_argument("--at", type=_instant, metavar="TIME",
                      help="deliver at this ISO 8601 time (with its UTC offset, e.g. 2026-12-24T18:00:00+01:00)")

    request = sub.add_parser("request", help="send a task and wait for its reply (request/reply)")
    request.add_argument("pool")
    request.add_argument("task_type")
    request.add_argument("payload", nargs="?", default="{}")
    request.add_argument("--timeout", type=float, default=10.0)

    sub.add_parser("pools", help="list the pools installed packages register (entry points warren.pools)")

    dlq_command.add_parser(sub)

    topo = sub.add_parser("topology", help="show or apply the exchanges, queues and bindings")
    topo_sub = topo.add_subparsers(dest="action", required=True)
    for action in ("show", "apply"):
        p = topo_sub.add_parser(action)
        p.add_argument("pools", nargs="*", help="pools to include (default: every installed pool)")
        if action == "show":
            p.add_argument("--json", action="store_true", help="print JSON (the default is a short listing)")
        else:
            p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                           help="keep trying to reach the broker (and the nodes) for this long (default: try once)")
            p.add_argument("--wait-for-nodes", type=int, default=0, metavar="N",
                           help="first wait until N RabbitMQ nodes run (management API), so quorum queues "
                                "get a member on each")
            p.add_argument("--management-port", type=int, default=15672, help="the management API's port")
    return parser


def _seconds(text: str) -> float:
    """``30``, ``30s``, ``5m``, ``2h`` or ``1d`` as seconds."""
    try:
        return parse_duration(text).total_seconds()
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (add Z or +01:00)")
    return value


def _payload(text: str) -> Any:
    raw = sys.stdin.read() if text == "-" else text
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"payload is not valid JSON: {e}") from None


def _topology_for(settings: Settings, specs: Sequence[str]) -> topology.Topology:
    pools: list[Pool] = [load_pool(spec) for spec in (specs or sorted(registered_pools()))]
    return topology.build(settings, pools=[p.spec for p in pools])


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return guarded(lambda settings: _dispatch(args, settings))


def guarded(command: Callable[[Settings], int], *, prog: str = "warren") -> int:
    """Run ``command`` with validated settings and logging set up; Warren's errors become one line
    on stderr and the documented exit status (2 configuration, 3 topology, 1 broker)."""
    try:
        settings = load_settings()
        logs.configure(settings)
        return command(settings)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except TopologyError as e:
        print(f"{prog}: topology conflict: {e}", file=sys.stderr)
        return EXIT_TOPOLOGY
    except WarrenError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_BROKER


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from warren.producer import Producer, task_message

    if args.command == "worker":
        from warren.worker.runtime import EXIT_ABANDONED, Worker

        if settings.metrics_port is not None:
            metrics.serve(settings.metrics_port)
        worker = Worker(load_pool(args.pool), settings, exit_when_idle=args.exit_when_idle)
        worker.install_signal_handlers()
        status = worker.run()
        if status == EXIT_ABANDONED:
            # Handler threads still running would keep the interpreter alive past the grace
            # period (it joins them at exit): leave now; the broker redelivers their messages.
            logging.shutdown()
            os._exit(status)
        return status
    if args.command == "publish":
        payload = _payload(args.payload)
        with Producer(settings, name="warren-cli") as producer:
            if args.count == 1:
                message_id = producer.publish(
                    args.pool, args.task_type, payload, message_id=args.message_id, correlation_id=args.correlation_id,
                    delay=args.delay, deliver_at=args.at,
                )
                print(message_id)
            else:
                if args.delay is not None or args.at is not None:
                    raise ConfigError("--delay and --at publish one message at a time (no --count)")
                messages = [
                    task_message(producer.names, args.pool, args.task_type, payload, correlation_id=args.correlation_id)
                    for _ in range(args.count)
                ]
                producer.publish_batch(messages)
                print(f"published {len(messages)} messages")
        return 0
    if args.command == "request":
        with Producer(settings, name="warren-cli") as producer:
            reply = producer.request(args.pool, args.task_type, _payload(args.payload), timeout=args.timeout)
        print(json.dumps(reply))
        return 0
    if args.command == "dlq":
        return dlq_command.run(args, settings)
    if args.command == "pools":
        for name, target in sorted(registered_pools().items()):
            print(f"{name:<12} {target}")
        return 0
    if args.command == "topology":
        topo = _topology_for(settings, args.pools)
        if args.action == "show":
            if args.json:
                print(topo.to_json())
            else:
                for e in topo.exchanges:
                    print(f"exchange {e.name} ({e.kind})")
                for q in topo.queues:
                    print(f"queue    {q.name} {json.dumps(dict(q.arguments), sort_keys=True)}")
                for b in topo.bindings:
                    print(f"binding  {b.source} -> {b.destination} [{b.routing_key}]")
            return 0
        from warren import readiness

        deadline = time.monotonic() + args.wait
        if args.wait_for_nodes > 1:
            running = readiness.wait_for_nodes(settings, nodes=args.wait_for_nodes,
                                               management_port=args.management_port, deadline=deadline)
            log.info("%d RabbitMQ nodes running", running)
        session = readiness.open_session(settings, name="warren-topology", deadline=deadline)
        try:
            topology.apply(session, topo)
        finally:
            session.close()
        print(f"applied {len(topo.exchanges)} exchanges, {len(topo.queues)} queues, {len(topo.bindings)} bindings")
        return 0
    raise AssertionError(args.command)


def main() -> None:
    sys.exit(run())
