"""The reference workload as a whole: its pools, its topology, and how its orders are accounted for.

Flow (every arrow a confirmed publish; every queue a quorum queue with retries and a DLQ)::

    API --place--> orders --order.created, reserve--> inventory --stock.reserved--> payments
                     ^                                   |                              |
                     +---------- stock.rejected ---------+      payment.completed/failed+
                     |                                                                  |
                     +--> order.completed / order.failed --> email     payment.completed --> shipping
                                                                        shipment.created --> sms
    every event --fanout--> analytics          order.# --topic--> audit
"""

from __future__ import annotations

from warren import topology
from warren.config import Settings
from warren.testing.ledger import Ledger
from warren.topology import Names, Subscription
from warren.worker.pool import load_pool

POOLS = ("orders", "inventory", "payments", "shipping", "email", "sms", "analytics", "audit")
OUTCOMES = Subscription("order-outcomes", patterns=("order.completed", "order.failed"))


def build_topology(settings: Settings, *, subscriptions: tuple[Subscription, ...] = ()) -> topology.Topology:
    return topology.build(settings, pools=[load_pool(p).spec for p in POOLS], subscriptions=subscriptions)


def order_ledger(settings: Settings) -> Ledger:
    """Orders by id: completed or failed from their outcome events, or dead-lettered in any pool's DLQ.
    Needs the ``OUTCOMES`` subscription in the topology."""
    names = Names(settings.namespace)
    return Ledger(
        settings,
        completion_queue=names.subscription(OUTCOMES.name),
        dead_letter_queues=tuple(names.pool(p, ()).dead_letter_queue for p in POOLS),
        id_field="order_id",
        failure_events=frozenset({"order.failed"}),
    )
