"""The declarative topology: every exchange, queue and binding, derived from settings and pools.

Workers, the API, the CLI and the operator read this one description; ``apply`` declares it
idempotently (declaring an entity that exists with the same arguments is a no-op in AMQP).

Names, for namespace ``ns`` and pool ``p``:
- ``ns.tasks`` (direct): routing key ``p`` -> work queue ``ns.p``;
- ``ns.events`` (topic): events by name (``order.created``); a pool that handles events binds its
  work queue with patterns (``payment.*``), so events get the same retries and dead letters as tasks;
- ``ns.broadcast`` (fanout): bound to ``ns.events`` with ``#``; a pool or subscription bound here
  sees every event;
- ``ns.sub.<name>``: subscription queues for readers outside the pools;
- ``ns.dlx`` (direct): routing key ``ns.p`` -> dead-letter queue ``ns.p.dlq``;
- ``ns.p.retry.<ms>``: delay queues whose TTL dead-letters back into ``ns.p``;
- ``ns.p.suspect``: messages that were in flight when a worker died, run one at a time (a single
  active consumer with prefetch 1), so a message that kills its worker is the only one counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from warren.config import Settings

ExchangeKind = Literal["direct", "fanout", "topic", "headers"]


@dataclass(frozen=True, slots=True)
class Exchange:
    name: str
    kind: ExchangeKind


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Binding:
    source: str
    destination: str
    routing_key: str
    to_exchange: bool = False


@dataclass(frozen=True, slots=True)
class Subscription:
    """A queue that collects events for a reader outside the pools (a ledger, an export):
    every event through the fanout exchange, or those matching topic ``patterns``."""

    name: str
    patterns: tuple[str, ...] = ()
    fanout: bool = False


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """What the topology needs to know of a pool: its name and which events become its tasks."""

    name: str
    events: tuple[str, ...] = ()  # topic patterns on ns.events routed into the pool's queue
    all_events: bool = False  # the pool's queue is bound to the fanout exchange: every event
    collectors: tuple[Subscription, ...] = ()  # subscriptions declared along with the pool
    retry_delays_ms: tuple[int, ...] = ()  # delay tiers its tasks ask for beyond the settings' backoff


@dataclass(frozen=True, slots=True)
class PoolNames:
    """The names one work pool uses."""

    queue: str
    dead_letter_queue: str
    retry_queues: tuple[tuple[int, str], ...]  # (delay ms, queue name), one per distinct delay
    suspect_queue: str  # messages in flight when a worker died, run one at a time

    def retry_queue_for(self, delay_ms: int) -> tuple[int, str]:
        """The delay queue to park a message in for ``delay_ms``: the longest tier not past it
        (the shortest if none is), so a message never waits longer than asked; the worker parks
        it again for what remains (see ``warren.worker.handling``)."""
        fitting = [(d, name) for d, name in self.retry_queues if d <= delay_ms]
        return fitting[-1] if fitting else self.retry_queues[0]


@dataclass(frozen=True, slots=True)
class Topology:
    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]
    bindings: tuple[Binding, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "exchanges": [asdict(e) for e in self.exchanges],
            "queues": [{"name": q.name, "arguments": dict(q.arguments)} for q in self.queues],
            "bindings": [asdict(b) for b in self.bindings],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=False)


class Declarer(Protocol):
    def declare_exchange(self, name: str, kind: str) -> None: ...
    def declare_queue(self, name: str, arguments: Mapping[str, Any]) -> None: ...
    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None: ...
    def bind_exchange(self, destination: str, source: str, routing_key: str) -> None: ...


class Checker(Protocol):
    def check_exchange(self, name: str) -> None: ...
    def check_queue(self, name: str) -> None: ...


class Names:
    """Every name derives from the namespace, so systems sharing a vhost never collide."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.tasks = f"{namespace}.tasks"
        self.events = f"{namespace}.events"
        self.broadcast = f"{namespace}.broadcast"
        self.dlx = f"{namespace}.dlx"

    def queue(self, pool: str) -> str:
        return f"{self.namespace}.{pool}"

    def subscription(self, name: str) -> str:
        return f"{self.namespace}.sub.{name}"

    def pool(self, pool: str, retry_delays_ms: Iterable[int]) -> PoolNames:
        queue = self.queue(pool)
        delays = sorted(set(retry_delays_ms))
        return PoolNames(
            queue=queue,
            dead_letter_queue=f"{queue}.dlq",
            retry_queues=tuple((d, f"{queue}.retry.{d}") for d in delays),
            suspect_queue=f"{queue}.suspect",
        )


# Delay queues every pool has, whatever its retry settings: producers of delayed tasks count on
# them, and a long wait hops through the longest (a day, then six hours, ...) instead of a few
# seconds at a time: at most a few dozen hops for a wait of days.
DELAY_TIERS_MS = (1_000, 10_000, 60_000, 600_000, 3_600_000, 21_600_000, 86_400_000)


def pool_names(settings: Settings, spec: PoolSpec) -> PoolNames:
    """The names of a pool's queues, with a delay tier for every backoff step of the settings,
    every retry delay its tasks declare, and the fixed ``DELAY_TIERS_MS``."""
    delays = (*settings.retry_delays_ms(), *spec.retry_delays_ms, *DELAY_TIERS_MS)
    return Names(settings.namespace).pool(spec.name, delays)


def _durable(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Arguments every Warren queue shares: the queue type and, on quorum, safe dead-lettering."""
    if settings.queue_type == "quorum":
        args: dict[str, Any] = {"x-queue-type": "quorum"}
        if "x-dead-letter-exchange" in extra:
            # at-least-once dead-lettering needs reject-publish overflow; without it, quorum
            # queues silently fall back to at-most-once.
            args.update({"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
    else:
        args = {"x-queue-type": "classic"}
    args.update(extra)
    return args


def build(
    settings: Settings,
    *,
    pools: Iterable[PoolSpec | str] = (),
    subscriptions: Iterable[Subscription] = (),
) -> Topology:
    """The whole topology for these pools and subscriptions."""
    names = Names(settings.namespace)
    exchanges = (
        Exchange(names.tasks, "direct"),
        Exchange(names.events, "topic"),
        Exchange(names.broadcast, "fanout"),
        Exchange(names.dlx, "direct"),
    )
    queues: list[Queue] = []
    bindings: list[Binding] = [Binding(names.events, names.broadcast, "#", to_exchange=True)]
    subs = list(subscriptions)
    for spec in (PoolSpec(p) if isinstance(p, str) else p for p in pools):
        pn = pool_names(settings, spec)
        work_args: dict[str, str | int] = {"x-dead-letter-exchange": names.dlx, "x-dead-letter-routing-key": pn.queue}
        if settings.queue_type == "quorum":
            # Explicit, never the broker's default (RabbitMQ 4.x defaults to 20).
            work_args["x-delivery-limit"] = settings.delivery_limit
        queues.append(Queue(pn.queue, _durable(settings, **work_args)))
        # One consumer at a time across the pool (each worker takes it with prefetch 1), dead
        # letters into the pool's own dead-letter queue.
        queues.append(Queue(pn.suspect_queue, _durable(settings, **work_args, **{"x-single-active-consumer": True})))
        queues.append(Queue(pn.dead_letter_queue, _durable(settings)))
        for delay, name in pn.retry_queues:
            retry_args = {"x-message-ttl": delay, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": pn.queue}
            queues.append(Queue(name, _durable(settings, **retry_args)))
        bindings.append(Binding(names.tasks, pn.queue, spec.name))
        bindings.append(Binding(names.dlx, pn.dead_letter_queue, pn.queue))
        bindings.extend(Binding(names.events, pn.queue, pattern) for pattern in spec.events)
        if spec.all_events:
            bindings.append(Binding(names.broadcast, pn.queue, ""))
        subs.extend(spec.collectors)
    for sub in subs:
        queue = names.subscription(sub.name)
        queues.append(Queue(queue, _durable(settings)))
        if sub.fanout:
            bindings.append(Binding(names.broadcast, queue, ""))
        bindings.extend(Binding(names.events, queue, pattern) for pattern in sub.patterns)
    return Topology(exchanges=exchanges, queues=tuple(_unique(queues)), bindings=tuple(_unique(bindings)))


def _unique(items: Iterable[Any]) -> list[Any]:
    seen: dict[Any, Any] = {}
    for item in items:
        seen.setdefault(item.name if isinstance(item, Queue) else item, item)
    return list(seen.values())


def apply(declarer: Declarer, topology: Topology) -> None:
    """Declare everything, in dependency order; safe to run any number of times."""
    for exchange in topology.exchanges:
        declarer.declare_exchange(exchange.name, exchange.kind)
    for queue in topology.queues:
        declarer.declare_queue(queue.name, queue.arguments)
    for binding in topology.bindings:
        if binding.to_exchange:
            declarer.bind_exchange(binding.destination, binding.source, binding.routing_key)
        else:
            declarer.bind_queue(binding.destination, binding.source, binding.routing_key)


def verify(checker: Checker, topology: Topology) -> None:
    """Check that every exchange and queue exists, without declaring anything: passive declares,
    which need no permission, for a user that may not configure (``WARREN_DECLARE_TOPOLOGY=false``).
    The first one missing raises (``TopologyError`` from a ``Session``). Bindings cannot be checked
    this way: whoever applied the topology declared them with the queues."""
    for exchange in topology.exchanges:
        checker.check_exchange(exchange.name)
    for queue in topology.queues:
        checker.check_queue(queue.name)
