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
