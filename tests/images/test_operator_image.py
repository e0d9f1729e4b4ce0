"""The operator's image, run as the chart runs it (non-root, read-only root filesystem, no
capabilities), against the kmock Kubernetes emulator (in a thread of this process) and the test
session's real RabbitMQ: it scales a Deployment from its queue, serves /healthz and Prometheus
metrics, and stops at once on `docker stop`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pika
import pytest

from tests.operator.emulator import (
    Emulator,
    kubeconfig,
    now_rfc3339,
    register_core,
    register_crd,
    seed,
)
from tests.support.docker import (
    HARDENED,
    OPERATOR_IMAGE,
    Container,
    eventually,
    free_ports,
)
from warren.testing.broker import LocalBroker

pytestmark = [pytest.mark.docker, pytest.mark.broker]

CRD_FILE = Path(__file__).resolve().parents[2] / "charts" / "warren" / "crds" / "workerautoscaler.yaml"
NS = "shop"
DEPLOYMENTS = "apps/v1/deployments"


class KubernetesInAThread:
    """kmock's emulator serving on 127.0.0.1 from its own event loop, while the test runs."""

    def __init__(self) -> None:
        self.emulator: Emulator | None = None
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        import kmock
        self._stop = asyncio.Event()
        async with Emulator() as emulator, kmock.Server(emulator):
            register_core(emulator)
            register_crd(emulator, CRD_FILE)
            self.emulator = emulator
            self.url = str(emulator.servers[0].url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(timeout=10), "the emulator did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self._loop.close()

    def replicas(self, name: str) -> int:
        assert self.emulator is not None
        return self.emulator.objects[DEPLOYMENTS, NS, name]["spec"]["replicas"]


@pytest.fixture
def kubernetes(broker: LocalBroker, tmp_path: Path) -> Iterator[tuple[KubernetesInAThread, Path]]:
    with KubernetesInAThread() as kube:
        assert kube.emulator is not None
        path = kubeconfig(kube.emulator, tmp_path / "kubeconfig")
        path.chmod(0o644)  # the container's user 10001 reads it
        yield kube, path


def test_the_operator_image_scales_a_deployment_serves_health_and_metrics_and_stops_at_once(
        run: Callable[..., Container], broker: LocalBroker, namespace: str,
        kubernetes: tuple[KubernetesInAThread, Path]) -> None:
    kube, config = kubernetes
    queue = f"{namespace}.payments"
    with contextlib.closing(pika.BlockingConnection(pika.URLParameters(broker.amqp_url))) as connection:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        channel.confirm_delivery()
        for number in range(40):
            channel.basic_publish("", queue, f"task {number}".encode(),
                                  pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
    assert kube.emulator is not None
    seed(kube.emulator, "v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    # The management API's URL and the credentials as separate keys (this broker's management port
    # is not the 15672 an amqp:// URL implies).
    seed(kube.emulator, "v1/secrets", _secret("broker", {"url": broker.management_url, "username": "guest",
                                                         "password": "guest"}))
    seed(kube.emulator, DEPLOYMENTS, _deployment("payments", replicas=1))
    seed(kube.emulator, "warren.dev/v1alpha1/workerautoscalers", _autoscaler("payments", queue))

    health, metrics = free_ports(2)
    operator = run(OPERATOR_IMAGE, env={
        "KUBECONFIG": "/kube/config", "WARREN_OPERATOR_NAMESPACE": NS,
        "WARREN_OPERATOR_HEALTH_PORT": str(health), "WARREN_OPERATOR_METRICS_PORT": str(metrics)},
        options=(*HARDENED, "--volume", f"{config}:/kube/config:ro"))
    eventually(lambda: kube.replicas("payments") == 4, timeout=30, logs=operator.logs,
               what="the operator container scaling payments 1 -> 4 for 40 messages at 10 per replica")
    assert _get(f"http://127.0.0.1:{health}/healthz")[0] == 200
    status, text = _get(f"http://127.0.0.1:{metrics}/metrics")
    assert status == 200
    desired = [line for line in text.splitlines()
               if line.startswith("warren_autoscaler_desired_replicas{") and 'name="payments"' in line]
    assert desired and desired[0].endswith(" 4.0"), text[-2000:]
    assert operator.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"
    logs = operator.logs()
    assert "Timer 'autoscale' succeeded" not in logs, "kopf's once-a-second timer lines are dropped at INFO"
    assert "Deployment payments 1 -> 4: backlog 40 msgs / 10 per replica = 4" in logs, logs[-2000:]
    exit_status, seconds = operator.stop(timeout=10)
    assert exit_status == 0, operator.logs()
    assert seconds < 5, f"docker stop took {seconds:.1f} s\n{operator.logs()}"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": now_rfc3339()},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


def _deployment(name: str, *, replicas: int) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "warren", "warren/pool": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS, "labels": labels, "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "worker", "image": "warren-worker:dev", "args": [name]}]}}},
            "status": {"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 1}}


def _autoscaler(name: str, queue: str) -> dict[str, Any]:
    return {"apiVersion": "warren.dev/v1alpha1", "kind": "WorkerAutoscaler",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"targetRef": {"name": name}, "queue": queue, "vhost": "/", "minReplicas": 1, "maxReplicas": 5,
                     "target": {"messagesPerReplica": 10}, "pollSeconds": 1, "managementSecretRef": {"name": "broker"}}}
