"""Which pods a scale-down should take: ``controller.kubernetes.io/pod-deletion-cost``.

On scale-down the ReplicaSet controller deletes the newest pods, busy or not (KEDA issues #2900,
#6719). Before lowering a Deployment's replicas the operator annotates its pods: a pod whose
consumers hold unacked messages costs that many, an idle one ``0``, so idle pods go first. Workers
still drain on SIGTERM; this only makes the choice better.

A consumer belongs to the pod named by its AMQP connection name (Warren workers name it after
``WARREN_WORKER_NAME``, the pod's name in the chart; else ``hostname:pid``, and a pod's hostname
is its name), else to the pod whose IP is the connection's peer address. ``deletion_costs`` is the
pure decision; ``annotate_pods`` is the Kubernetes edge (pods: list and patch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import kubernetes

from warren_operator.stats import Consumer

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
MAX_COST = 2**31 - 1  # the annotation is an int32


@dataclass(frozen=True, slots=True)
class Pod:
    name: str
    ip: str | None  # status.podIP; None while unassigned
    cost: str | None = None  # the annotation's current value


def owner(consumer: Consumer, pods: Sequence[Pod]) -> Pod | None:
    """The pod ``consumer`` runs in: by connection name (the pod's name, or ``name:pid``), else by IP."""
    if consumer.connection_name:
        named = {consumer.connection_name, consumer.connection_name.rpartition(":")[0]}
        for pod in pods:
            if pod.name in named:
                return pod
    if consumer.peer_host:
        for pod in pods:
            if pod.ip == consumer.peer_host:
                return pod
    return None


def deletion_costs(consumers: Iterable[Consumer], pods: Sequence[Pod]) -> dict[str, int]:
    """Each pod's cost: the unacked messages its consumers hold, capped to an int32; 0 if idle."""
    costs = dict.fromkeys((pod.name for pod in pods), 0)
    for consumer in consumers:
        pod = owner(consumer, pods)
        if pod is not None:
            costs[pod.name] = min(MAX_COST, costs[pod.name] + consumer.unacked)
    return costs


def annotation_changes(consumers: Iterable[Consumer], pods: Sequence[Pod]) -> dict[str, str]:
    """The annotation value of each pod whose value must change (nothing for those already right)."""
    current = {pod.name: pod.cost for pod in pods}
    return {name: str(cost) for name, cost in deletion_costs(consumers, pods).items() if current[name] != str(cost)}


# --- Kubernetes -----------------------------------------------------------------------------


def annotate_pods(namespace: str, selector: str, consumers: Iterable[Consumer], *,
                  timeout: float) -> dict[str, str]:
    """Annotate the pods ``selector`` picks in ``namespace`` (pods: list, patch); the values set.

    Raises ``kubernetes.client.ApiException`` or a urllib3 error when the API server refuses or
    does not answer; pods annotated before that keep their new value.
    """
    core = kubernetes.client.CoreV1Api()
    listed = core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=timeout).items
    pods = [Pod(name=meta.name, ip=item.status.pod_ip if item.status else None,
                cost=(meta.annotations or {}).get(ANNOTATION))
            for item in listed if (meta := item.metadata) and meta.name and meta.deletion_timestamp is None]
    changes = annotation_changes(consumers, pods)
    for name, value in changes.items():
        core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": {ANNOTATION: value}}},
                                  _request_timeout=timeout)
    return changes

