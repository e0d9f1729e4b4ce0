"""The real operator, in-process, against kmock's Kubernetes emulator and a real RabbitMQ node.

kopf runs ``warren_operator.handlers`` in the test's event loop; the handlers' ``kubernetes``
client reaches the emulator through a kubeconfig; the queue is a real one on the session broker.
One operator run plays the whole story (it takes a few seconds to start and stop):

- 40 messages at 10 per replica scale the Deployment from 1 to 4, and an Event says why;
- once the queue is purged and the 3 s scale-down window has passed, it is back at 1, and before
  that the pods whose consumers (real ones, on the broker, named after their pod) hold unacked
  messages got a higher ``pod-deletion-cost`` than the idle ones, which got ``0``;
- a WorkerAutoscaler whose spec cannot be used says so in ``SpecValid=False``, and scales nothing;
- one whose Deployment does not exist says so in ``TargetFound=False`` and one warning Event;
- one whose management API does not answer says ``BrokerReachable=False`` and holds its replicas;
- all of it shows on the Prometheus endpoint, scraped over HTTP, and a deleted WorkerAutoscaler's
  series are gone;
- the Kubernetes API calls the operator made (kopf's and the handlers') are exactly those the
  chart's Role grants; none of them ever wrote a WorkerAutoscaler's metadata (no finalizer, no
  kopf bookkeeping), so once the operator is stopped a WorkerAutoscaler is still deleted at once
  (`helm uninstall` deletes the operator before the custom resources).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kmock
import kopf
import kubernetes
import pika
import pytest
import yaml

from tests.operator.emulator import (
    Emulator,
    kubeconfig,
    now_rfc3339,
    operator_requests,
    register_core,
    register_crd,
    seed,
)
from warren.testing.broker import LocalBroker
from warren_operator import handlers, telemetry
from warren_operator.deletion_cost import ANNOTATION

CRD_FILE = Path(__file__).parents[2] / "charts" / "warren" / "crds" / "workerautoscaler.yaml"
NS = "shop"
DEPLOYMENTS, SECRETS, PODS = "apps/v1/deployments", "v1/secrets", "v1/pods"
# (resource, verb) as a Role's rules name them: what the chart's operator Role must grant, no more.
OPERATOR_API_CALLS = {
    ("warren.dev", "workerautoscalers", "list"), ("warren.dev", "workerautoscalers", "watch"),
    ("warren.dev", "workerautoscalers/status", "patch"),
    ("", "events", "create"), ("", "secrets", "get"), ("", "pods", "list"), ("", "pods", "patch"),
    ("apps", "deployments/scale", "get"), ("apps", "deployments/scale", "patch"),
}


@pytest.fixture
def kube_client_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where the kubeconfig will be: kopf's login (``load_kube_config()``) reads this path.

    The ``kubernetes`` package reads $KUBECONFIG once, at import; its default location is patched
    instead. The client's process-wide default configuration is restored afterwards.
    """
    path = tmp_path / "kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # never in-cluster
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    saved = kubernetes.client.Configuration.get_default_copy()
    yield path
    kubernetes.client.Configuration.set_default(saved)


@pytest.mark.broker
def test_scales_with_the_queue_and_reports_bad_specs_and_unreachable_brokers(
        broker: LocalBroker, namespace: str, kube_client_config: Path) -> None:
    queue = f"{namespace}.payments"
    _declare_queue(broker, queue)
    asyncio.run(_story(broker, queue, kube_client_config))


@pytest.mark.broker
@pytest.mark.chaos
def test_a_stopped_broker_holds_the_replicas_and_its_return_resumes_scaling(
        kube_client_config: Path, tmp_path: Path) -> None:
    """The broker itself stops (its own node: the session's serves the other tests) and starts again."""
    with LocalBroker(tmp_path / "broker", name="warren-outage") as broker:
        _declare_queue(broker, "payments")
        _publish(broker, "payments", count=30)
        asyncio.run(_outage(broker, kube_client_config))


async def _outage(broker: LocalBroker, kubeconfig_path: Path) -> None:
    async with Emulator() as emulator, kmock.Server(emulator):
        register_core(emulator)
        wsa = register_crd(emulator, CRD_FILE)
        kubeconfig(emulator, kubeconfig_path)
        seed(emulator, "v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        seed(emulator, SECRETS, _secret("rabbitmq-management", broker.management_url))
        seed(emulator, DEPLOYMENTS, _deployment("payments", 1))
        async with _operator():
            await _create(emulator, wsa, _autoscaler("payments", queue="payments", secret="rabbitmq-management"))
            await _eventually(lambda: _replicas(emulator, "payments") == 3, timeout=20,
                              what="payments scaled to 3 for 30 messages at 10 per replica")

            await asyncio.to_thread(broker.stop)
            await _eventually(lambda: _condition(emulator, wsa, "payments", "BrokerReachable").get("status") == "False",
                              timeout=15, what="BrokerReachable=False once the broker is stopped")
            # Held through several failed polls (longer than the 3 s scale-down window).
            failed = _failed_polls("payments")
            await _eventually(lambda: _failed_polls("payments") >= failed + 4, timeout=15,
                              what="four more polls failing while the broker is down")
            assert _replicas(emulator, "payments") == 3, "the replicas are held"
            assert _status(emulator, wsa, "payments")["desiredReplicas"] == 3

            await asyncio.to_thread(broker.start)
            await _eventually(lambda: _condition(emulator, wsa, "payments", "BrokerReachable").get("status") == "True",
                              timeout=30, what="BrokerReachable=True again, with no one restarting the operator")
            await asyncio.to_thread(_publish, broker, "payments", count=20)
            await _eventually(lambda: _replicas(emulator, "payments") == 5, timeout=30,
                              what="scaling resumes: 5 replicas for 50 messages")
            warnings = [event for event in _events(emulator) if event["type"] == "Warning"]
            assert [event["reason"] for event in warnings] == ["BrokerUnreachable"], warnings


def _failed_polls(name: str) -> float:
    sample = telemetry.REGISTRY.get_sample_value(
        "warren_autoscaler_poll_failures_total", {"namespace": NS, "name": name, "reason": "BrokerUnreachable"})
    return sample or 0.0


def test_kopf_would_keep_its_progress_in_annotations_not_in_the_pruned_status() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure(settings=settings)
    for storage in (settings.persistence.progress_storage, settings.persistence.diffbase_storage):
        assert isinstance(storage, kopf.AnnotationsProgressStorage | kopf.AnnotationsDiffBaseStorage), storage
        assert storage.prefix == handlers.GROUP


@pytest.mark.parametrize(("change", "accepted"), [
    ({}, True),  # the example the story uses
    ({"minReplicas": 0}, True),  # a Deployment may sleep at zero
    ({"target": {"drainSeconds": 30}}, True),
    ({"target": {"messagesPerReplica": 10, "drainSeconds": 30}}, False),  # exactly one target
    ({"target": {}}, False),
    ({"minReplicas": -1}, False),
    ({"maxReplicas": 0}, False),
    ({"pollSeconds": 0}, False),
    ({"scaleDown": {"maxStep": 0}}, False),
    ({"queue": ""}, False),
])
def test_the_crd_schema_accepts_usable_specs_only(change: dict[str, Any], accepted: bool) -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    body = _autoscaler("payments", queue="payments", secret="rabbitmq-management")
    body["spec"].update(change)
    errors = list(jsonschema.Draft4Validator(schema).iter_errors(body))  # OpenAPI 3.0 bounds are draft 4's
    assert not errors if accepted else errors, [e.message for e in errors]


async def _story(broker: LocalBroker, queue: str, kubeconfig_path: Path) -> None:
    async with Emulator() as emulator, kmock.Server(emulator):
        register_core(emulator)
        wsa = register_crd(emulator, CRD_FILE)
        assert wsa == f"{handlers.GROUP}/{handlers.VERSION}/{handlers.PLURAL}"
        kubeconfig(emulator, kubeconfig_path)
        seed(emulator, "v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        seed(emulator, SECRETS, _secret("rabbitmq-management", broker.management_url))
        seed(emulator, SECRETS, _secret("nowhere", f"http://127.0.0.1:{_closed_port()}"))
        for name, replicas in (("payments", 1), ("email", 2), ("sms", 3)):
            seed(emulator, DEPLOYMENTS, _deployment(name, replicas))
        for pod, cost in (("payments-busy", None), ("payments-busy-too", None), ("payments-idle", None),
                          ("payments-settled", "0"), ("email-busy", None)):
            seed(emulator, PODS, _pod(pod, component=pod.split("-")[0], cost=cost))

        # Real consumers that never ack: payments-busy's holds 3 messages, payments-busy-too's
        # (named hostname:pid, as a worker without WARREN_WORKER_NAME names itself) holds 1, and
        # one in a pod of another Deployment holds 1 (its pod is not the payments' to annotate).
        consumers = contextlib.ExitStack()
        for connection_name, prefetch in (("payments-busy", 3), ("payments-busy-too:4242", 1), ("email-busy", 1)):
            consumers.enter_context(await asyncio.to_thread(_holding_consumer, broker, queue,
                                                            connection_name=connection_name, prefetch=prefetch))
        metrics = telemetry.serve(0, address="127.0.0.1")
        try:
            await _run_story(emulator, wsa, broker, queue, scrape=_scraper(metrics.server_port))
        finally:
            metrics.shutdown()
            await asyncio.to_thread(consumers.close)
        await _deleted_with_the_operator_stopped(emulator, wsa)


async def _deleted_with_the_operator_stopped(emulator: Emulator, wsa: str) -> None:
    """What `helm uninstall` does: the operator is gone first, then its WorkerAutoscalers."""
    written = [r for r in operator_requests(emulator)
               if r.resource == kmock.resource(handlers.GROUP, handlers.VERSION, handlers.PLURAL)
               and r.action not in (kmock.action.LIST, kmock.action.WATCH) and r.subresource != "status"]
    assert written == [], "the operator never writes a WorkerAutoscaler itself (finalizers, kopf's annotations)"
    requests_before = len(operator_requests(emulator))
    api = kubernetes.client.CustomObjectsApi()
    for name in ("payments", "sms", "orders"):
        assert not emulator.objects[wsa, NS, name].get("metadata", {}).get("finalizers"), name
        # Through the Kubernetes client, as Helm would (kmock's own client is not served once kopf
        # has been cancelled mid-watch).
        await asyncio.to_thread(api.delete_namespaced_custom_object, handlers.GROUP, handlers.VERSION, NS,
                                handlers.PLURAL, name)
        assert emulator.objects[wsa, NS, name].deleted, f"{name} deleted at once, not left Terminating"
    later = [r for r in operator_requests(emulator)[requests_before:] if r.action != kmock.action.DELETE]
    assert later == [], "the stopped operator left nothing running"


async def _run_story(emulator: Emulator, wsa: str, broker: LocalBroker, queue: str, *,
                     scrape: Callable[[], str]) -> None:
    async with _operator():
        # prefetch 5: the 5 held messages need only 1 replica (the in-flight floor)
        await _create(emulator, wsa, _autoscaler("payments", queue=queue, secret="rabbitmq-management",
                                                 prefetch=5))
        await _create(emulator, wsa, _autoscaler("email", queue=queue, secret="nowhere"))
        await _create(emulator, wsa, _autoscaler("sms", queue=queue, secret="rabbitmq-management",
                                                 minReplicas=5, maxReplicas=2))
        await _create(emulator, wsa, _autoscaler("orders", queue=queue, secret="rabbitmq-management"))

        await asyncio.to_thread(_publish, broker, queue, count=40)
        await _eventually(lambda: _replicas(emulator, "payments") == 4, timeout=20,
                          what="payments scaled to 4 for 40 messages at 10 per replica")
        # kopf patches the status and posts the Event after the handler has scaled: soon, not at once
        await _eventually(lambda: _status(emulator, wsa, "payments").get("desiredReplicas") == 4 and any(
            event["reason"] == "Scaled" and "1 -> 4" in event["message"] for event in _events(emulator)),
            timeout=5, what="the status and an Event say why the Deployment was scaled")
        assert "backlog 40 msgs / 10 per replica = 4" in _status(emulator, wsa, "payments")["lastScaleReason"]
        assert _condition(emulator, wsa, "payments", "BrokerReachable")["status"] == "True"
        await _eventually(lambda: _sample(scrape(), "warren_autoscaler_desired_replicas", name="payments") == 4,
                          timeout=5, what="desired replicas 4 on the metrics endpoint")
        assert (_sample(scrape(), "warren_autoscaler_scale_actions_total", name="payments", direction="up") or 0) >= 1
        assert _sample(scrape(), "warren_autoscaler_unacked_messages", name="payments", queue=queue) == 5

        await asyncio.to_thread(_purge, broker, queue)
        purged = time.monotonic()
        await _eventually(lambda: _replicas(emulator, "payments") == 1, timeout=20,
                          what="payments back to 1 after the scale-down window")
        assert time.monotonic() - purged >= 3 - 1, "not before the 3 s window (one poll of slack)"
        assert {pod: _cost(emulator, pod) for pod in ("payments-busy", "payments-busy-too", "payments-idle",
                                                      "payments-settled", "email-busy")} == {
            "payments-busy": "3", "payments-busy-too": "1", "payments-idle": "0", "payments-settled": "0",
            "email-busy": None}, "busy pods cost their unacked messages, idle ones 0, other Deployments' nothing"
        assert not [r for r in operator_requests(emulator) if r.resource == kmock.resource("", "v1", "pods")
                    and r.name == "payments-settled"], "a pod whose cost is already right is not patched"
        assert (_sample(scrape(), "warren_autoscaler_scale_actions_total", name="payments", direction="down") or 0) >= 1

        await _eventually(lambda: _condition(emulator, wsa, "sms", "SpecValid").get("status") == "False",
                          timeout=10, what="SpecValid=False on the invalid spec")
        assert "maxReplicas" in _condition(emulator, wsa, "sms", "SpecValid")["message"]
        assert _replicas(emulator, "sms") == 3

        await _eventually(lambda: _condition(emulator, wsa, "orders", "TargetFound").get("status") == "False",
                          timeout=10, what="TargetFound=False for a Deployment that does not exist")
        assert _condition(emulator, wsa, "orders", "TargetFound")["reason"] == "DeploymentNotFound"
        missing = [event for event in _events(emulator) if event["reason"] == "TargetNotFound"]
        assert [(event["type"], event["involvedObject"]["name"]) for event in missing] == [("Warning", "orders")]

        await _eventually(lambda: _condition(emulator, wsa, "email", "BrokerReachable").get("status") == "False",
                          timeout=10, what="BrokerReachable=False with nothing listening")
        reachable = _condition(emulator, wsa, "email", "BrokerReachable")
        assert reachable["reason"] == "BrokerUnreachable"
        assert ":guest@" not in reachable["message"], "the password is masked"
        assert _replicas(emulator, "email") == 2
        warnings = [event for event in _events(emulator) if event["reason"] == "BrokerUnreachable"]
        assert len(warnings) == 1, "one warning Event when the broker stops answering, not one per poll"
        assert warnings[0]["type"] == "Warning" and warnings[0]["involvedObject"]["name"] == "email"

        exposed = scrape()
        assert (_sample(exposed, "warren_autoscaler_poll_failures_total", name="email",
                        reason="BrokerUnreachable") or 0) >= 1
        assert (_sample(exposed, "warren_autoscaler_poll_failures_total", name="sms", reason="InvalidSpec") or 0) >= 1
        assert (_sample(exposed, "warren_autoscaler_poll_duration_seconds_count", name="payments") or 0) >= 1
        assert ":guest@" not in exposed
        await _delete(emulator, wsa, "email")
        await _eventually(lambda: 'name="email"' not in scrape(), timeout=10,
                          what="a deleted WorkerAutoscaler's series removed")
        assert 'name="payments"' in scrape()

        assert _api_calls(emulator) == OPERATOR_API_CALLS


@contextlib.asynccontextmanager
async def _operator() -> Any:
    """kopf with the handlers' own settings (standalone, no CRD scanning), stopped by cancelling."""
    ready = asyncio.Event()
    task = asyncio.create_task(kopf.operator(clusterwide=True, standalone=True, ready_flag=ready))
    try:
        await asyncio.wait_for(ready.wait(), timeout=10)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _create(emulator: Emulator, resource: str, body: dict[str, Any]) -> None:
    """Create through the API, so that kopf's watch sees it."""
    group_version, plural = resource.rsplit("/", 1)
    async with emulator.post(f"/apis/{group_version}/namespaces/{NS}/{plural}", json=body) as response:
        assert response.status < 300, await response.text()


async def _delete(emulator: Emulator, resource: str, name: str) -> None:
    group_version, plural = resource.rsplit("/", 1)
    async with emulator.delete(f"/apis/{group_version}/namespaces/{NS}/{plural}/{name}") as response:
        assert response.status < 300, await response.text()


def _api_calls(emulator: Emulator) -> set[tuple[str, str, str]]:
    """The operator's requests as (API group, resource[/subresource], verb), as RBAC rules name them."""
    verbs = {kmock.action.FETCH: "get", kmock.action.UPDATE: "patch"}  # kmock's UPDATE is an HTTP PATCH
    calls = set()
    for request in operator_requests(emulator):
        if request.resource is None or request.resource.plural is None or request.action is None:
            continue  # discovery (/api/v1, /apis/GROUP/VERSION): any authenticated user may read it
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        calls.add((request.resource.group or "", resource, verbs.get(request.action, request.action.value.lower())))
    return calls


def _scraper(port: int) -> Callable[[], str]:
    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    return scrape


def _sample(exposition: str, metric: str, **labels: str) -> float | None:
    """The value of the one series of ``metric`` whose labels include ``labels``; None if none."""
    values = [float(value) for series, value in re.findall(rf"^{metric}{{(.*)}} (\S+)$", exposition, re.MULTILINE)
              if all(f'{key}="{value}"' in series.split(",") for key, value in labels.items())]
    assert len(values) <= 1, f"{metric}{labels} names {len(values)} series"
    return values[0] if values else None


def _cost(emulator: Emulator, pod: str) -> str | None:
    return (emulator.objects[PODS, NS, pod]["metadata"].get("annotations") or {}).get(ANNOTATION)


async def _eventually(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.2)


def _replicas(emulator: Emulator, name: str) -> int:
    return emulator.objects[DEPLOYMENTS, NS, name]["spec"]["replicas"]


def _status(emulator: Emulator, wsa: str, name: str) -> dict[str, Any]:
    return dict(emulator.objects[wsa, NS, name].raw).get("status") or {}


def _condition(emulator: Emulator, wsa: str, name: str, kind: str) -> dict[str, Any]:
    return next((c for c in _status(emulator, wsa, name).get("conditions") or [] if c["type"] == kind), {})


def _events(emulator: Emulator) -> list[dict[str, Any]]:
    return [obj.raw for (resource, _, _), obj in emulator.objects.items()
            if resource == "v1/events" and not obj.deleted]


def _autoscaler(deployment: str, *, queue: str, secret: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{handlers.GROUP}/{handlers.VERSION}", "kind": "WorkerAutoscaler",
        "metadata": {"name": deployment, "namespace": NS},
        "spec": {
            "targetRef": {"name": deployment}, "queue": queue, "vhost": "/",
            "minReplicas": 1, "maxReplicas": 5, "target": {"messagesPerReplica": 10},
            "pollSeconds": 1, "scaleDown": {"stabilizationSeconds": 3},
            "managementSecretRef": {"name": secret}, **spec,
        },
    }


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "warren", "app.kubernetes.io/component": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels, "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                {"name": "worker", "image": "warren-worker:dev", "args": ["worker", name]}]}},
        },
        "status": {"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 1},
    }


def _pod(name: str, *, component: str, cost: str | None) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "warren", "app.kubernetes.io/component": component}
    annotations = {ANNOTATION: cost} if cost is not None else {}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "worker", "image": "warren-worker:dev"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"}}  # not the consumers' 127.0.0.1


def _secret(name: str, url: str) -> dict[str, Any]:
    data = {"url": url, "username": "guest", "password": "guest"}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": now_rfc3339()},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _declare_queue(broker: LocalBroker, queue: str) -> None:
    with contextlib.closing(pika.BlockingConnection(pika.URLParameters(broker.amqp_url))) as connection:
        connection.channel().queue_declare(queue, durable=True)


def _publish(broker: LocalBroker, queue: str, *, count: int) -> None:
    with contextlib.closing(pika.BlockingConnection(pika.URLParameters(broker.amqp_url))) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        for number in range(count):
            channel.basic_publish("", queue, f"task {number}".encode(),
                                  pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))


def _holding_consumer(broker: LocalBroker, queue: str, *, connection_name: str,
                      prefetch: int) -> contextlib.closing[pika.BlockingConnection]:
    """A consumer that takes ``prefetch`` messages and never acks them, on a connection named as a
    Warren worker names its own. Close it to give them back."""
    parameters = pika.URLParameters(broker.amqp_url)
    parameters.client_properties = {"connection_name": connection_name}
    parameters.heartbeat = 0  # nothing reads this connection: no heartbeat to miss
    connection = pika.BlockingConnection(parameters)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    channel.basic_consume(queue, lambda *_: None, auto_ack=False)
    return contextlib.closing(connection)


def _purge(broker: LocalBroker, queue: str) -> None:
    with contextlib.closing(pika.BlockingConnection(pika.URLParameters(broker.amqp_url))) as connection:
        connection.channel().queue_purge(queue)
