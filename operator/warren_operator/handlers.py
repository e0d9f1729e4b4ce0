"""Kopf wiring of the WorkerAutoscaler: read the queue, decide, scale the Deployment, say why.

Validating the spec lives in ``spec``, deciding in ``policy``, the management Secret in
``credentials``, talking to RabbitMQ in ``management`` (its replies become ``stats``), choosing the
pods a scale-down takes in ``deletion_cost``, Prometheus metrics in ``telemetry``; this module only
moves values between Kubernetes, those and kopf. Run it with ``python -m warren_operator``
(settings in ``config``; the CRD is ``charts/warren/crds/workerautoscaler.yaml``).

No finalizer, ever. kopf puts one on every object a timer or daemon runs for, and `helm
uninstall` deletes custom resources after the operator's Deployment and RBAC: nothing would be left
to remove the finalizer, the WorkerAutoscalers would stay Terminating and their namespace with
them. So kopf only keeps an index of the WorkerAutoscalers (fed by its watch, needing no
finalizer), and one polling task, started with the operator, acts on each every ``pollSeconds``.
The operator writes only their status (never their metadata): a WorkerAutoscaler is deleted at
once whether the operator runs or not. What ``decide`` remembers between polls (its ``History``)
lives in that task: an operator restart forgets it, and the policy then treats the unknown past as
having asked for the current count. Before a scale-down the Deployment's pods get their
``pod-deletion-cost``; if that fails the operator says so in its log and scales down all the same
(workers drain on SIGTERM anyway).

What it asks of the Kubernetes API (the chart's Role grants exactly this): workerautoscalers
list, watch; workerautoscalers/status patch; events create; deployments/scale get, patch;
secrets get; pods list, patch.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import logging
import time
from dataclasses import dataclass, field
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
DEFAULT_POLL_SECONDS = 5.0  # how soon an invalid spec or a failed poll is looked at again
REPORTING_COMPONENT = "warren-operator"
TICK_SECONDS = 1.0  # how often the polling task looks for WorkerAutoscalers that are due
# kopf's own bookkeeping, should a change handler ever be added: in annotations under our group,
# never in status.kopf (the CRD's structural schema prunes it, so kopf would re-run handlers forever).
ANNOTATIONS_PREFIX = GROUP

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # One operator replica: no peering (it would need kopf's peering CRDs and RBAC).
    settings.peering.standalone = True
    # The WorkerAutoscaler CRD is installed before the operator: no cluster-wide CRD watching.
    settings.scanning.disabled = True
    # The operator posts its Events itself (each scale, each new failure): kopf posts none.
    settings.posting.enabled = False
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATIONS_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATIONS_PREFIX, key="last-handled-configuration")


@kopf.on.login()
def login(logger: kopf.Logger, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
    """kopf and the ``kubernetes`` client share one configuration: in-cluster, else kubeconfig."""
    return kopf.login_via_client(logger=logger, settings=settings)


@kopf.index(GROUP, VERSION, PLURAL)
def workerautoscalers(namespace: str | None, name: str | None, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    """Every WorkerAutoscaler as last seen by kopf's watch: an index needs no finalizer."""
    assert namespace is not None and name is not None  # WorkerAutoscaler is namespaced
    return {(namespace, name): copy.deepcopy(dict(body))}


@kopf.on.startup()  # type: ignore[arg-type]  # kopf's ActivityFn does not name indices among its kwargs
async def start_polling(workerautoscalers: kopf.Index[Key, dict[str, Any]], memo: kopf.Memo, **_: Any) -> None:
    """Start the polling task; it ends with the task running kopf's startup and cleanup handlers,
    so a cancelled operator (which runs no cleanup handler) leaves no poller behind."""
    poller = asyncio.create_task(poll_forever(workerautoscalers), name="warren-operator poller")
    memo.poller = poller
    owner = asyncio.current_task()
    if owner is not None:
        owner.add_done_callback(lambda _: poller.cancel())


@kopf.on.cleanup()
async def stop_polling(memo: kopf.Memo, **_: Any) -> None:
    poller = memo.get("poller")
    if poller is not None:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller


@dataclass
class _Autoscaler:
    """What the operator keeps of one WorkerAutoscaler between polls."""

    uid: str
    conditions: list[dict[str, Any]]  # as last written: the operator is their only writer
    next_poll: float = 0.0
    history: History = field(default_factory=History)


async def poll_forever(index: kopf.Index[Key, dict[str, Any]], *, tick: float = TICK_SECONDS) -> None:
    """Poll each WorkerAutoscaler of ``index`` when it is due, all of them side by side (each poll
    is blocking I/O, in a thread); forget those that left the index (deleted)."""
    known: dict[Key, _Autoscaler] = {}
    while True:
        now = time.time()
        due = []
        for key in list(index):
            body = next(iter(index.get(key, ())), None)
            if body is None:
                continue
            metadata = body.get("metadata") or {}
            state = known.get(key)
            if state is None or state.uid != metadata.get("uid"):
                state = known[key] = _Autoscaler(
                    uid=metadata.get("uid", ""), conditions=[dict(c) for c in (body.get("status") or {}).get(
                        "conditions") or []])
            if now >= state.next_poll and not metadata.get("deletionTimestamp"):
                due.append((key, body, state))
        for key in set(known) - set(index):
            del known[key]
            telemetry.forget(*key)
        if due:
            await asyncio.gather(*(asyncio.to_thread(_poll_safely, key, body, state, now) for key, body, state in due))
        await asyncio.sleep(tick)


def _poll_safely(key: Key, body: dict[str, Any], state: _Autoscaler, now: float) -> None:
    """One poll; whatever it raises is logged and retried after ``DEFAULT_POLL_SECONDS``: one
    WorkerAutoscaler's failure never stops the others'."""
    namespace, name = key
    try:
        with telemetry.polling(namespace, name):
            status = _poll(name, namespace, body=body, state=state, now=now)
        if status:
            _patch_status(namespace, name, status)
    except Exception as e:
        state.next_poll = now + DEFAULT_POLL_SECONDS
        log.warning("WorkerAutoscaler %s/%s: poll failed, retrying in %g s: %s", namespace, name,
                    DEFAULT_POLL_SECONDS, _api_failure(e) if isinstance(e, kubernetes.client.ApiException) else e)


def _patch_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    kubernetes.client.CustomObjectsApi().patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status})


def _poll(name: str, namespace: str, *, body: dict[str, Any], state: _Autoscaler, now: float) -> dict[str, Any]:
    """Read the Deployment's scale and the queue, decide, scale; the status to write."""
    conditions = state.conditions
    status: dict[str, Any] = {"conditions": conditions}  # the whole list: a merge patch replaces lists
    try:
        autoscaler = parse_spec(body.get("spec") or {})
    except SpecError as e:
        state.next_poll = now + DEFAULT_POLL_SECONDS
        telemetry.failed(namespace, name, reason="InvalidSpec")
        if _set_condition(conditions, "SpecValid", False, "InvalidSpec", str(e)):
            _post_event(body, warning=True, reason="InvalidSpec", message=str(e))
        return status
    policy_spec = autoscaler.policy()
    state.next_poll = now + policy_spec.poll_seconds
    _set_condition(conditions, "SpecValid", True, "Valid", "the spec is valid")

    apps = kubernetes.client.AppsV1Api()
    try:
        scale = apps.read_namespaced_deployment_scale(policy_spec.deployment, namespace)
    except kubernetes.client.ApiException as e:
        # No such Deployment (yet: a Helm install may create it after us), or no permission.
        message = f"cannot read Deployment {policy_spec.deployment}'s scale: {_api_failure(e)}"
        telemetry.failed(namespace, name, reason="TargetNotFound")
        if _set_condition(conditions, "TargetFound", False, "DeploymentNotFound" if e.status == 404 else "Unreadable",
                          message):
            log.warning("WorkerAutoscaler %s/%s: %s", namespace, name, message)
            _post_event(body, warning=True, reason="TargetNotFound", message=message)
        return status
    _set_condition(conditions, "TargetFound", True, "DeploymentFound", f"Deployment {policy_spec.deployment}")
    current = (scale.spec.replicas if scale.spec else 0) or 0
    selector = (scale.status.selector if scale.status else None) or ""
    status["currentReplicas"] = current
    vhost, timeout = autoscaler.vhost, min(5.0, policy_spec.poll_seconds)
    try:
        config = management_config(namespace, autoscaler)
        stats = fetch_queue_stats(config, vhost, policy_spec.queue, current_replicas=current, timeout=timeout)
    except (MetricsError, CredentialsError) as e:
        log.warning("WorkerAutoscaler %s/%s: queue %r not read, holding %d replicas: %s", namespace, name,
                    policy_spec.queue, current, e)
        telemetry.failed(namespace, name, reason=type(e).__name__)
        answered = isinstance(e, StatsNotReady)  # the broker answered, the queue has no counts yet
        if _set_condition(conditions, "BrokerReachable", answered, type(e).__name__, str(e)) and not answered:
            _post_event(body, warning=True, reason=type(e).__name__, message=f"holding {current} replicas: {e}")
        return status
    _set_condition(conditions, "BrokerReachable", True, "StatsRead", f"read queue {policy_spec.queue!r}")
    telemetry.observed(namespace, name, queue=policy_spec.queue, stats=stats)

    decision = decide(policy_spec, stats, history=state.history, now=now)
    state.history = decision.history
    desired = decision.desired_replicas
    if desired < current:
        _set_deletion_costs(config, vhost=vhost, queue=policy_spec.queue, namespace=namespace, selector=selector,
                            timeout=timeout)
    if desired != current:
        apps.patch_namespaced_deployment_scale(policy_spec.deployment, namespace, {"spec": {"replicas": desired}})
        message = f"Deployment {policy_spec.deployment} {current} -> {desired}: {decision.reason}"
        log.info("WorkerAutoscaler %s/%s: %s", namespace, name, message)
        _post_event(body, warning=False, reason="Scaled", message=message)
        status.update(lastScaleTime=_timestamp(now), lastScaleReason=decision.reason)
    telemetry.decided(namespace, name, current=current, desired=desired)
    status.update(ready=stats.ready, unacked=stats.unacked, consumers=stats.consumers,
                  publishRate=stats.publish_rate, ackRate=stats.ack_rate,
                  currentReplicas=desired, desiredReplicas=desired)
    return status


def _set_deletion_costs(config: ManagementConfig, *, vhost: str, queue: str, namespace: str, selector: str,
                        timeout: float) -> None:
    """Mark the pods holding unacked messages as costly to delete; a failure is logged, not raised."""
    if not selector:
        log.warning("pod deletion costs not set, scaling down anyway: the scale has no selector")
        return
    try:
        consumers = fetch_consumers(config, vhost, queue, timeout=timeout)
        changed = annotate_pods(namespace, selector, consumers, timeout=timeout)
    except MetricsError as e:
        log.warning("pod deletion costs not set, scaling down anyway: consumers of %r not read: %s", queue, e)
    except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError) as e:
        log.warning("pod deletion costs not set, scaling down anyway: pods %r: %s", selector, _api_failure(e))
    else:
        log.info("pod deletion costs before scaling down: %s",
                 ", ".join(f"{pod}={cost}" for pod, cost in sorted(changed.items())) or "unchanged")


def _post_event(body: dict[str, Any], *, warning: bool, reason: str, message: str) -> None:
    """An Event on the WorkerAutoscaler (events: create); a failure to post is logged, not raised."""
    metadata = body["metadata"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": metadata["name"],
                           "namespace": metadata["namespace"], "uid": metadata.get("uid")},
        "type": "Warning" if warning else "Normal", "reason": reason, "message": message[:1024],
        "source": {"component": REPORTING_COMPONENT}, "reportingComponent": REPORTING_COMPONENT,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }
    try:
        kubernetes.client.CoreV1Api().create_namespaced_event(metadata["namespace"], event)  # type: ignore[arg-type]
    except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError) as e:
        log.warning("Event %s on %s/%s not posted: %s", reason, metadata["namespace"], metadata["name"],
                    _api_failure(e))


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
