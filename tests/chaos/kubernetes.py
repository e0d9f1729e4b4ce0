"""The Kubernetes adapter of the chaos platform: for users with a cluster (kind), via `make e2e`.

It installs the chart with only RabbitMQ (no pools, no API) into a fresh namespace, reaches the
broker through `kubectl port-forward`, and runs each worker as a bare pod of the worker image,
hardened as the chart runs it. SIGTERM is sent from inside the pod (PID 1 has a handler, so the
kernel delivers it); a hard kill is a forced pod deletion; the broker is stopped and started by
scaling its StatefulSet (its volume keeps the queues). Here, with no cluster, it is never used.
"""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from tests.support.docker import free_ports
from warren.testing.cluster import DockerCluster, Node
from warren_shop import pipeline as shop

ROOT = Path(__file__).resolve().parents[2]
RELEASE = "warren"  # the chart's objects are then warren-rabbitmq, warren-broker-api, ...
# The chaos workers' broker URL: the administrator's, since they run pools the chart does not
# deploy (and so has no users for), declaring their own topology.
BROKER_SECRET = "chaos-broker"


def kubectl(*args: str, namespace: str | None = None, check: bool = True, stdin: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = ["kubectl", *(["--namespace", namespace] if namespace else []), *args]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command[:5])} ... failed ({done.returncode}): {done.stderr.strip()}")
    return done


def cluster_problem() -> str | None:
    """None if a cluster answers, else why not (one line)."""
    try:
        done = kubectl("version", "--request-timeout=5s", check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["no cluster"])[-1]


class Pod:
    def __init__(self, platform: KubernetesPlatform, env: Mapping[str, str], *, name: str, pool: str,
                 restart: bool) -> None:
        self.name = name
        self.ns = platform.namespace
        env = {k: v for k, v in env.items() if k != "WARREN_BROKER_URL"}  # in-cluster URL from the Secret
        manifest = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "warren-chaos"}},
            "spec": {
                "restartPolicy": "Always" if restart else "Never",
                "terminationGracePeriodSeconds": 60,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "worker", "image": platform.worker_image, "imagePullPolicy": "IfNotPresent", "args": [pool],
                    "env": [{"name": "WARREN_WORKER_NAME", "value": name},
                            {"name": "WARREN_BROKER_URL",
                             "valueFrom": {"secretKeyRef": {"name": BROKER_SECRET, "key": "url"}}},
                            *({"name": k, "value": v} for k, v in env.items())],
                    "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        }
        kubectl("apply", "-f", "-", namespace=self.ns, stdin=json.dumps(manifest))

    @property
    def ident(self) -> str:
        return self.name

    def _status(self) -> dict:
        done = kubectl("get", "pod", self.name, "-o", "json", namespace=self.ns, check=False)
        return json.loads(done.stdout)["status"] if done.returncode == 0 else {}

    def _container(self) -> dict:
        statuses = self._status().get("containerStatuses") or [{}]
        return statuses[0]

    def wait_ready(self, timeout: float = 120.0) -> Pod:
        deadline = time.monotonic() + timeout
        while " consuming " not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"pod {self.name} not consuming within {timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.5)
        return self

    def signal(self, signum: int) -> None:
        kubectl("exec", self.name, "--", "python", "-c", f"import os; os.kill(1, {int(signum)})",
                namespace=self.ns, check=False)

    def kill(self) -> None:
        kubectl("delete", "pod", self.name, "--grace-period=0", "--force", "--wait=false", namespace=self.ns,
                check=False)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            status = self._status()
            if not status:
                return 137  # deleted by force: killed
            terminated = (self._container().get("state") or {}).get("terminated")
            if terminated is not None:
                return int(terminated["exitCode"])
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pod {self.name}", timeout)
            time.sleep(0.2)

    def alive(self) -> bool:
        return "running" in (self._container().get("state") or {})

    def restarts(self) -> int:
        return int(self._container().get("restartCount", 0))

    def log(self) -> str:
        return kubectl("logs", self.name, namespace=self.ns, check=False).stdout

    def stop(self) -> None:
        kubectl("delete", "pod", self.name, "--grace-period=0", "--force", "--wait=false", namespace=self.ns,
                check=False)


class KubernetesPlatform:
    name = "kubernetes"

    def __init__(self, *, namespace: str, worker_image: str) -> None:
        self.namespace = namespace
        self.worker_image = worker_image
        values = {"api": {"enabled": False}, "pools": {pool: {"enabled": False} for pool in shop.POOLS}}
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(values, f)
            f.flush()
            subprocess.run(["helm", "upgrade", "--install", RELEASE, str(ROOT / "charts" / "warren"), "--namespace",
                            namespace, "--create-namespace", "--wait", "--timeout", "10m", "--values", f.name],
                           check=True, capture_output=True, text=True, timeout=700)
        secret = json.loads(kubectl("get", "secret", f"{RELEASE}-rabbitmq", "-o", "json", namespace=namespace).stdout)
        password = base64.b64decode(secret["data"]["rabbitmq-password"]).decode()
        in_cluster = f"amqp://warren:{password}@{RELEASE}-rabbitmq.{namespace}.svc.cluster.local:5672/%2F"
        kubectl("apply", "-f", "-", namespace=namespace, stdin=json.dumps({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": BROKER_SECRET}, "type": "Opaque",
            "data": {"url": base64.b64encode(in_cluster.encode()).decode()}}))
        (self.local_port,) = free_ports(1)
        self.broker_url = f"amqp://warren:{password}@127.0.0.1:{self.local_port}/%2F"
        self._forward: subprocess.Popen[bytes] | None = None
        self._port_forward()
        self._names = iter(range(1, 10_000))

    def _port_forward(self) -> None:
        if self._forward is not None:
            self._forward.terminate()
        self._forward = subprocess.Popen(
            ["kubectl", "--namespace", self.namespace, "port-forward", f"svc/{RELEASE}-rabbitmq",
             f"{self.local_port}:5672"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from warren.broker import Session
        from warren.config import Settings
        from warren.errors import BrokerUnavailable

        deadline = time.monotonic() + 120
        while True:
            try:
                Session.open(Settings(_env_file=None, broker_url=self.broker_url), name="chaos-probe").close()
                return
            except BrokerUnavailable:
                assert time.monotonic() < deadline, "broker not reachable through port-forward"
                time.sleep(0.5)

    def start_worker(self, env: Mapping[str, str], *, name: str, pool: str = "selftest", restart: bool = False) -> Pod:
        return Pod(self, env, name=f"{name}-{next(self._names)}", pool=pool, restart=restart)

    def stop_broker(self) -> None:
        kubectl("scale", "statefulset", f"{RELEASE}-rabbitmq", "--replicas=0", namespace=self.namespace)
        kubectl("wait", "--for=delete", "pod", "-l", "app.kubernetes.io/component=rabbitmq", "--timeout=300s",
                namespace=self.namespace, timeout=320)

    def start_broker(self) -> None:
        kubectl("scale", "statefulset", f"{RELEASE}-rabbitmq", "--replicas=1", namespace=self.namespace)
        kubectl("rollout", "status", "statefulset", f"{RELEASE}-rabbitmq", "--timeout=300s",
                namespace=self.namespace, timeout=320)
        self._port_forward()

    def close(self) -> None:
        if self._forward is not None:
            self._forward.terminate()
        kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)


class KubernetesRabbitCluster(DockerCluster):
    """The chart's RabbitMQ StatefulSet with the production-like values (3 nodes, quorum queues on
    all of them), with ``DockerCluster``'s node operations mapped onto its pods: kill = forced pod
    deletion, stop = pod deletion (the preStop drains), freeze = SIGSTOP to the node's processes,
    cut off = a NetworkPolicy isolating the pod (it needs a CNI that enforces NetworkPolicies:
    kind's default kindnet does not; install Calico or Cilium). Each node is reached through a
    ``kubectl port-forward`` to its pod, restarted with the pod; the management API, leaders and
    membership are read as on Docker."""

    def __init__(self, *, namespace: str, size: int = 3) -> None:
        self.namespace = namespace
        self.size = size
        values = {"api": {"enabled": False}, "pools": {pool: {"enabled": False} for pool in shop.POOLS},
                  "rabbitmq": {"replicas": size}}
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(values, f)
            f.flush()
            subprocess.run(["helm", "upgrade", "--install", RELEASE, str(ROOT / "charts" / "warren"), "--namespace",
                            namespace, "--create-namespace", "--wait", "--timeout", "15m", "--values",
                            str(ROOT / "charts" / "warren" / "values-production.yaml"), "--values", f.name],
                           check=True, capture_output=True, text=True, timeout=1000)
        secret = json.loads(kubectl("get", "secret", f"{RELEASE}-rabbitmq", "-o", "json", namespace=namespace).stdout)
        password = base64.b64decode(secret["data"]["rabbitmq-password"]).decode()
        self.credentials = f"warren:{password}"
        ports = iter(free_ports(2 * size))
        self.nodes = [Node(name=f"rabbit@{RELEASE}-rabbitmq-{n}", hostname=f"{RELEASE}-rabbitmq-{n}",
                           container=f"{RELEASE}-rabbitmq-{n}", amqp_port=next(ports), management_port=next(ports))
                      for n in range(size)]
        self._forwards: dict[str, subprocess.Popen[bytes]] = {}
        for node in self.nodes:
            self._forward(node)
        self.wait_formed(timeout=300)

    @property
    def amqp_urls(self) -> list[str]:
        return [f"amqp://{self.credentials}@127.0.0.1:{n.amqp_port}/%2F" for n in self.nodes]

    def _forward(self, node: Node) -> None:
        if (old := self._forwards.pop(node.container, None)) is not None:
            old.terminate()
        kubectl("wait", "--for=condition=Ready", f"pod/{node.container}", "--timeout=300s",
                namespace=self.namespace, timeout=320)
        self._forwards[node.container] = subprocess.Popen(
            ["kubectl", "--namespace", self.namespace, "port-forward", f"pod/{node.container}",
             f"{node.amqp_port}:5672", f"{node.management_port}:15672"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _exec(self, node: Node, *command: str) -> subprocess.CompletedProcess[str]:
        return kubectl("exec", node.container, "-c", "rabbitmq", "--", *command, namespace=self.namespace,
                       check=False, timeout=120)

    def kill(self, node: Node) -> None:
        kubectl("delete", "pod", node.container, "--grace-period=0", "--force", namespace=self.namespace)

    def stop(self, node: Node, timeout: int = 300) -> None:
        kubectl("delete", "pod", node.container, namespace=self.namespace, timeout=timeout + 60)

    def start_node(self, node: Node) -> None:  # the StatefulSet recreates the pod
        self._forward(node)

    def restart(self, node: Node) -> None:
        self.stop(node)
        self.start_node(node)

    def freeze(self, node: Node) -> None:
        self._exec(node, "sh", "-c", "kill -STOP -1")

    def thaw(self, node: Node) -> None:
        kubectl("debug", node.container, "--profile=general", "--image=busybox", "--target=rabbitmq", "--",
                "kill", "-CONT", "-1", namespace=self.namespace, check=False)

    def cut_off(self, node: Node) -> None:
        policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": {"name": f"cut-{node.container}"},
                  "spec": {"podSelector": {"matchLabels": {"statefulset.kubernetes.io/pod-name": node.container}},
                           "policyTypes": ["Ingress", "Egress"]}}
        kubectl("apply", "-f", "-", namespace=self.namespace, stdin=json.dumps(policy))

    def reconnect(self, node: Node) -> None:
        kubectl("delete", "networkpolicy", f"cut-{node.container}", namespace=self.namespace)

    def wait_for_quorum_plus_one(self, node: Node, *, timeout: float = 120) -> None:
        done = self._exec(node, "rabbitmq-upgrade", "await_online_quorum_plus_one", "-t", str(int(timeout)))
        assert done.returncode == 0, done.stderr

    def logs(self, node: Node) -> str:
        return kubectl("logs", node.container, "-c", "rabbitmq", "--tail", "200", namespace=self.namespace,
                       check=False).stdout

    def close(self) -> None:
        for forward in self._forwards.values():
            forward.terminate()
        kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)
