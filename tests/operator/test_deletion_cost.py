"""Which pods a scale-down should take: the cost of each pod, from the consumers the broker reports.

The pure decision only; ``test_operator_kmock`` annotates pods through the API with real consumers.
"""

from __future__ import annotations

import pytest

from warren_operator.deletion_cost import MAX_COST, Pod, annotation_changes, deletion_costs
from warren_operator.stats import Consumer

PODS = (Pod("payments-7d9f-a", "10.1.0.11"), Pod("payments-7d9f-b", "10.1.0.12"), Pod("payments-7d9f-c", "10.1.0.13"))


def _named(name: str | None, unacked: int, peer_host: str | None = "10.9.9.9") -> Consumer:
    return Consumer(connection_name=name, peer_host=peer_host, unacked=unacked)


@pytest.mark.parametrize(("consumers", "costs"), [
    # nobody consumes: every pod is as good to delete as another
    ((), {"payments-7d9f-a": 0, "payments-7d9f-b": 0, "payments-7d9f-c": 0}),
    # WARREN_WORKER_NAME is the pod's name: the connection is named after it
    ((_named("payments-7d9f-b", 4),), {"payments-7d9f-a": 0, "payments-7d9f-b": 4, "payments-7d9f-c": 0}),
    # no WARREN_WORKER_NAME: hostname:pid, and the hostname is the pod's name
    ((_named("payments-7d9f-c:7", 2),), {"payments-7d9f-a": 0, "payments-7d9f-b": 0, "payments-7d9f-c": 2}),
    # a name matches a pod's whole name, never a part of it
    ((_named("payments-7d9f:7", 2),), {"payments-7d9f-a": 0, "payments-7d9f-b": 0, "payments-7d9f-c": 0}),
    # an unnamed connection belongs to the pod with its peer address
    ((_named(None, 3, peer_host="10.1.0.11"),), {"payments-7d9f-a": 3, "payments-7d9f-b": 0, "payments-7d9f-c": 0}),
    # a name that is no pod's (another client, or a pod's sidecar named otherwise) falls back to the address
    ((_named("sidecar", 3, peer_host="10.1.0.12"),), {"payments-7d9f-a": 0, "payments-7d9f-b": 3,
                                                       "payments-7d9f-c": 0}),
    # the name wins over the address: behind a NAT every peer is the node's address
    ((_named("payments-7d9f-a", 1, peer_host="10.1.0.13"),), {"payments-7d9f-a": 1, "payments-7d9f-b": 0,
                                                               "payments-7d9f-c": 0}),
    # several channels of one pod add up
    ((_named("payments-7d9f-a", 1), _named("payments-7d9f-a:9", 2)), {"payments-7d9f-a": 3, "payments-7d9f-b": 0,
                                                                       "payments-7d9f-c": 0}),
    # a consumer of another Deployment (or outside the cluster) costs none of these pods anything
    ((_named("email-5c4b-x", 9, peer_host="10.2.0.1"),), {"payments-7d9f-a": 0, "payments-7d9f-b": 0,
                                                           "payments-7d9f-c": 0}),
    # the annotation is an int32: a huge backlog is capped, never overflows
    ((_named("payments-7d9f-a", MAX_COST), _named("payments-7d9f-a", 5)),
     {"payments-7d9f-a": MAX_COST, "payments-7d9f-b": 0, "payments-7d9f-c": 0}),
])
def test_a_pod_costs_the_unacked_messages_its_consumers_hold(
        consumers: tuple[Consumer, ...], costs: dict[str, int]) -> None:
    assert deletion_costs(consumers, PODS) == costs


def test_only_pods_whose_cost_changes_are_annotated() -> None:
    pods = (Pod("busy", "10.1.0.1", cost=None),  # never annotated
            Pod("was-busy", "10.1.0.2", cost="7"),  # busy at the last scale-down, idle now
            Pod("idle", "10.1.0.3", cost="0"),  # already right
            Pod("still-busy", "10.1.0.4", cost="2"))  # already right

    changes = annotation_changes([_named("busy", 5), _named("still-busy", 2)], pods)

    assert changes == {"busy": "5", "was-busy": "0"}
