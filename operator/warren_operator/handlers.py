"""Kopf wiring of the WorkerAutoscaler: read the queue, decide, scale the Deployment, say why.

Validating the spec lives in ``spec``, deciding in ``policy``, the management Secret in
``credentials``, talking to RabbitMQ in ``management`` (its replies become ``stats``), choosing the
pods a scale-down takes in ``deletion_cost``, Prometheus metrics in ``telemetry``; this module only
moves values between Kubernetes, those and kopf. Run it with ``python -m warren_operator``
(settings in ``config``; the CRD is ``charts/warren/crds/workerautoscaler.yaml``).

A one-second timer looks at each WorkerAutoscaler and acts every ``pollSeconds``. What ``decide``
remembers between polls (its ``History``) stays in the object's kopf ``memo``: an operator restart
forgets it, and the policy then treats the unknown past as having asked for the current count.
Before a scale-down the Deployment's pods get their ``pod-deletion-cost``; if that fails the
operator says so in its log and scales down all the same (workers drain on SIGTERM anyway).

What it asks of the Kubernetes API (the chart's Role grants exactly this): workerautoscalers
list, watch, patch (kopf: finalizer, status); events create; deployments/scale get, patch;
secrets get; pods list, patch.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

import kopf
import kubernetes
import urllib3

from warren_operator import telemetry
from warren_operator.credentials import CredentialsError, management_config
from warren_operator.deletion_cost import annotate_pods
from warren_operator.management import ManagementConfig, MetricsError, StatsNotReady, fetch_consumers, fetch_queue_stats
from warren_operator.policy import History, decide
from warren_operator.spec import SpecError, parse_spec

GROUP, VERSION, PLURAL = "warren.dev", "v1alpha1", "workerautoscalers"
DEFAULT_POLL_SECONDS = 5.0  # how soon an invalid spec is looked at again


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # One operator replica: no peering (it would need kopf's peering CRDs and RBAC).
    settings.peering.standalone = True
    # The WorkerAutoscaler CRD is installed before the operator: no cluster-wide CRD watching.
    settings.scanning.disabled = True
    # Events on the WorkerAutoscaler: each scale (INFO) and each new failure (WARNING), posted
    # explicitly; log lines are never posted (posting.loggers stays off).
    settings.posting.level = logging.INFO
    settings.posting.loggers = False
    settings.posting.reporting_component = "warren-operator"
    # kopf keeps a finalizer on each WorkerAutoscaler while its timer runs: name it after us.
    settings.persistence.finalizer = f"{GROUP}/operator"


@kopf.on.login()
def login(logger: kopf.Logger, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
    """kopf and the ``kubernetes`` client share one configuration: in-cluster, else kubeconfig."""
    return kopf.login_via_client(logger=logger, settings=settings)


@kopf.timer(GROUP, VERSION, PLURAL, interval=1.0, backoff=DEFAULT_POLL_SECONDS)
def autoscale(name: str | None, namespace: str | None, spec: kopf.Spec, status: kopf.Status, body: kopf.Body,
              memo: kopf.Memo, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    now = time.time()
    if now < memo.get("next_poll", 0.0):
        return
    assert namespace is not None and name is not None  # WorkerAutoscaler is namespaced
    with telemetry.polling(namespace, name):
        _poll(name, namespace, spec=spec, status=status, body=body, memo=memo, patch=patch, logger=logger, now=now)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget(name: str | None, namespace: str | None, **_: Any) -> None:
    """A deleted WorkerAutoscaler's series go with it (kopf stops its timer first)."""
    if namespace is not None and name is not None:
        telemetry.forget(namespace, name)


def _poll(name: str, namespace: str, *, spec: kopf.Spec, status: kopf.Status, body: kopf.Body, memo: kopf.Memo,
          patch: kopf.Patch, logger: kopf.Logger, now: float) -> None:
    conditions = [dict(c) for c in status.get("conditions") or []]
    patch.status["conditions"] = conditions  # the whole list: a merge patch replaces lists
    try:
        autoscaler = parse_spec(spec)
    except SpecError as e:
        memo.next_poll = now + DEFAULT_POLL_SECONDS
        telemetry.failed(namespace, name, reason="InvalidSpec")
        if _set_condition(conditions, "SpecValid", False, "InvalidSpec", str(e)):
            kopf.warn(body, reason="InvalidSpec", message=str(e))
        return
    policy_spec = autoscaler.policy()
    memo.next_poll = now + policy_spec.poll_seconds
    _set_condition(conditions, "SpecValid", True, "Valid", "the spec is valid")

    apps = kubernetes.client.AppsV1Api()
    current, selector = _current_scale(apps, policy_spec.deployment, namespace, retry=policy_spec.poll_seconds)
    patch.status["currentReplicas"] = current
    vhost, timeout = autoscaler.vhost, min(5.0, policy_spec.poll_seconds)
    try:
        config = management_config(namespace, autoscaler)
        stats = fetch_queue_stats(config, vhost, policy_spec.queue, current_replicas=current, timeout=timeout)
    except (MetricsError, CredentialsError) as e:
        logger.warning("queue %r not read, holding %d replicas: %s", policy_spec.queue, current, e)
        telemetry.failed(namespace, name, reason=type(e).__name__)
        answered = isinstance(e, StatsNotReady)  # the broker answered, the queue has no counts yet
        if _set_condition(conditions, "BrokerReachable", answered, type(e).__name__, str(e)) and not answered:
            kopf.warn(body, reason=type(e).__name__, message=f"holding {current} replicas: {e}")
        return
    _set_condition(conditions, "BrokerReachable", True, "StatsRead", f"read queue {policy_spec.queue!r}")
    telemetry.observed(namespace, name, queue=policy_spec.queue, stats=stats)

    decision = decide(policy_spec, stats, history=memo.get("history", History()), now=now)
    memo.history = decision.history
    desired = decision.desired_replicas
    if desired < current:
        _set_deletion_costs(config, vhost=vhost, queue=policy_spec.queue, namespace=namespace, selector=selector,
                            timeout=timeout, logger=logger)
    if desired != current:
        apps.patch_namespaced_deployment_scale(policy_spec.deployment, namespace, {"spec": {"replicas": desired}})
        message = f"Deployment {policy_spec.deployment} {current} -> {desired}: {decision.reason}"
        logger.info("%s", message)
        kopf.info(body, reason="Scaled", message=message)
        patch.status.update(lastScaleTime=_timestamp(now), lastScaleReason=decision.reason)
    telemetry.decided(namespace, name, current=current, desired=desired)
    patch.status.update(ready=stats.ready, unacked=stats.unacked, consumers=stats.consumers,
                        publishRate=stats.publish_rate, ackRate=stats.ack_rate,
                        currentReplicas=desired, desiredReplicas=desired)


class DeploymentUnreadable(kopf.TemporaryError):
    """The Deployment's scale cannot be read (no such Deployment, no permission): retried."""


def _current_scale(apps: Any, deployment: str, namespace: str, *, retry: float) -> tuple[int, str]:
    """The Deployment's replicas and its pods' label selector (``status.selector`` of its scale)."""
    try:
        scale = apps.read_namespaced_deployment_scale(deployment, namespace)
    except kubernetes.client.ApiException as e:
        raise DeploymentUnreadable(f"cannot read Deployment {deployment}'s scale: {_api_failure(e)}",
                                   delay=retry) from None
    return scale.spec.replicas or 0, (scale.status.selector if scale.status else None) or ""


def _set_deletion_costs(config: ManagementConfig, *, vhost: str, queue: str, namespace: str, selector: str,
                        timeout: float, logger: kopf.Logger) -> None:
    """Mark the pods holding unacked messages as costly to delete; a failure is logged, not raised."""
    if not selector:
        logger.warning("pod deletion costs not set, scaling down anyway: the scale has no selector")
        return
    try:
        consumers = fetch_consumers(config, vhost, queue, timeout=timeout)
        changed = annotate_pods(namespace, selector, consumers, timeout=timeout)
    except MetricsError as e:
        logger.warning("pod deletion costs not set, scaling down anyway: consumers of %r not read: %s", queue, e)
    except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError) as e:
        logger.warning("pod deletion costs not set, scaling down anyway: pods %r: %s", selector, _api_failure(e))
    else:
        logger.info("pod deletion costs before scaling down: %s",
                    ", ".join(f"{pod}={cost}" for pod, cost in sorted(changed.items())) or "unchanged")


def _api_failure(error: Exception) -> str:
    """Status and reason only: an ApiException's text also holds the response's headers and body."""
    if isinstance(error, kubernetes.client.ApiException):
        return f"{error.status} {error.reason}"
    return type(error).__name__


def _set_condition(conditions: list[dict[str, Any]], kind: str, ok: bool, reason: str, message: str) -> bool:
    """Set the ``kind`` condition in place; True if its status changed (its transition time moves)."""
    previous = next((c for c in conditions if c.get("type") == kind), {})
    value = "True" if ok else "False"
    changed = previous.get("status") != value
    conditions[:] = [c for c in conditions if c.get("type") != kind] + [{
        "type": kind, "status": value, "reason": reason, "message": message,
        "lastTransitionTime": _timestamp(time.time()) if changed else previous.get("lastTransitionTime")}]
    return changed


def _timestamp(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
