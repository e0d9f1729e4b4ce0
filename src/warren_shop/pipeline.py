"""The reference workload as a whole: its pools, its topology, and how its orders are accounted for.

Flow (every arrow a confirmed publish; every queue a quorum queue with retries and a DLQ)::

    API --place--> orders --order.created, reserve--> inventory --stock.reserved--> payments
                     ^                                   |                              |
                     +---------- stock.rejected ---------+      payment.completed/failed+
                     |                                                                  |
                     +--> order.paid / order.failed --> email        payment.completed --> shipping
                                                                        shipment.created --> sms
    shipped and e-mailed --> order.completed (from shipping or email, whichever is last)
    every event --fanout--> analytics          order.# --topic--> audit

Every role writes what it did into the shop's store, with the order's status history.
"""

from __future__ import annotations

from warren import Pool, topology
from warren.config import Settings
from warren.testing.ledger import Ledger
from warren.topology import Names, Subscription
from warren_shop.roles import analytics, audit, inventory, notifications, orders, payments, shipping

ROLES: dict[str, Pool] = {
    "orders": orders.pool, "inventory": inventory.pool, "payments": payments.pool, "shipping": shipping.pool,
    "email": notifications.email, "sms": notifications.sms, "analytics": analytics.pool, "audit": audit.pool,
}
POOLS = tuple(ROLES)
# An order's outcome: completed once shipped and e-mailed, or failed with a reason.
OUTCOMES = Subscription("order-outcomes", patterns=("order.completed", "order.failed"))


def build_topology(settings: Settings, *, subscriptions: tuple[Subscription, ...] = ()) -> topology.Topology:
    return topology.build(settings, pools=[p.spec for p in ROLES.values()], subscriptions=subscriptions)


def order_ledger(settings: Settings, *, dead_letters: bool = True) -> Ledger:
    """Orders by id: completed or failed from their outcome events, or dead-lettered in any pool's DLQ
    (which it consumes; with ``dead_letters=False`` it leaves them there for ``warren dlq``).
    Needs the ``OUTCOMES`` subscription in the topology."""
    names = Names(settings.namespace)
    return Ledger(
        settings,
        completion_queue=names.subscription(OUTCOMES.name),
        dead_letter_queues=tuple(names.pool(p, ()).dead_letter_queue for p in POOLS) if dead_letters else (),
        id_field="order_id",
        failure_events=frozenset({"order.failed"}),
    )
