"""The real operator, in-process, against kmock's Kubernetes emulator and a real RabbitMQ node.

kopf runs ``warren_operator.handlers`` in the test's event loop; the handlers' ``kubernetes``
client reaches the emulator through a kubeconfig; the queue is a real one on the session broker.
One operator run plays the whole story (it takes a few seconds to start and stop):

- 40 messages at 10 per replica scale the Deployment from 1 to 4, and an Event says why;
- once the queue is purged and the 3 s scale-down window has passed, it is back at 1;
- a WorkerAutoscaler whose spec cannot be used says so in ``SpecValid=False``, and scales nothing;
- one whose management API does not answer says ``BrokerReachable=False`` and holds its replicas.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
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

from tests.operator.emulator import Emulator, kubeconfig, now_rfc3339, register_core, register_crd, seed
from warren.localbroker import LocalBroker
from warren_operator import handlers

CRD_FILE = Path(__file__).parents[2] / "charts" / "warren" / "crds" / "workerautoscaler.yaml"
NS = "shop"
DEPLOYMENTS, SECRETS = "apps/v1/deployments", "v1/secrets"


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

        async with _operator():
            await _create(emulator, wsa, _autoscaler("payments", queue=queue, secret="rabbitmq-management"))
            await _create(emulator, wsa, _autoscaler("email", queue=queue, secret="nowhere"))
            await _create(emulator, wsa, _autoscaler("sms", queue=queue, secret="rabbitmq-management",
                                                     minReplicas=5, maxReplicas=2))

            await asyncio.to_thread(_publish, broker, queue, count=40)
            await _eventually(lambda: _replicas(emulator, "payments") == 4, timeout=20,
                              what="payments scaled to 4 for 40 messages at 10 per replica")
            status = emulator.objects[wsa, NS, "payments"]["status"]
            assert status["desiredReplicas"] == 4
            assert "backlog 40 msgs / 10 per replica = 4" in status["lastScaleReason"]
            assert _condition(emulator, wsa, "payments", "BrokerReachable")["status"] == "True"
            assert any(event["reason"] == "Scaled" and "1 -> 4" in event["message"]
                       for event in _events(emulator)), "an Event says why the Deployment was scaled"

            await asyncio.to_thread(_purge, broker, queue)
            purged = time.monotonic()
            await _eventually(lambda: _replicas(emulator, "payments") == 1, timeout=20,
                              what="payments back to 1 after the scale-down window")
            assert time.monotonic() - purged >= 3 - 1, "not before the 3 s window (one poll of slack)"

            await _eventually(lambda: _condition(emulator, wsa, "sms", "SpecValid").get("status") == "False",
                              timeout=10, what="SpecValid=False on the invalid spec")
            assert "maxReplicas" in _condition(emulator, wsa, "sms", "SpecValid")["message"]
            assert _replicas(emulator, "sms") == 3

            await _eventually(lambda: _condition(emulator, wsa, "email", "BrokerReachable").get("status") == "False",
                              timeout=10, what="BrokerReachable=False with nothing listening")
            reachable = _condition(emulator, wsa, "email", "BrokerReachable")
            assert reachable["reason"] == "BrokerUnreachable"
            assert ":guest@" not in reachable["message"], "the password is masked"
            assert _replicas(emulator, "email") == 2
            warnings = [event for event in _events(emulator) if event["reason"] == "BrokerUnreachable"]
            assert len(warnings) == 1, "one warning Event when the broker stops answering, not one per poll"
            assert warnings[0]["type"] == "Warning" and warnings[0]["involvedObject"]["name"] == "email"


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


async def _eventually(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.2)


def _replicas(emulator: Emulator, name: str) -> int:
    return emulator.objects[DEPLOYMENTS, NS, name]["spec"]["replicas"]


def _condition(emulator: Emulator, wsa: str, name: str, kind: str) -> dict[str, Any]:
    status = dict(emulator.objects[wsa, NS, name].raw).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


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


def _purge(broker: LocalBroker, queue: str) -> None:
    with contextlib.closing(pika.BlockingConnection(pika.URLParameters(broker.amqp_url))) as connection:
        connection.channel().queue_purge(queue)
