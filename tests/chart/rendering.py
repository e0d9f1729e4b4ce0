"""Rendering the chart (charts/warren) with Helm's own engine, no cluster: the value sets the tests
specify, and the objects of a render made easy to ask about.

helm-python-sdk (``helm_python``) wraps Helm v4's Go SDK, so rendering, the values schema and lint
are Helm's own. Without a cluster ``lookup`` finds nothing, so generated Secrets are random per render.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from helm_python import Chart, values_from_yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "warren"
RELEASE = "warren"

# A digest in the right form: the all-features set pins every image by digest.
DIGEST = "sha256:" + "0123456789abcdef" * 4

VALUE_SETS: dict[str, dict[str, Any]] = {
    # What `helm install warren charts/warren` deploys: one RabbitMQ node, one worker per pool.
    "default": {},
    # Three RabbitMQ nodes: quorum queues replicated across them.
    "three-node": {"rabbitmq": {"replicas": 3}},
    # No bundled broker: the roles take the URL from an existing Secret.
    "external-broker": {
        "rabbitmq": {"enabled": False},
        "externalBroker": {"existingSecret": "shared-broker", "key": "amqp-url"},
        # The operator reads the management API of the broker that URL names.
        "operator": {"enabled": True},
        "pools": {"email": {"enabled": True, "autoscaling": {"enabled": True}}},
    },
    # No bundled database: the roles take the URL of a PostgreSQL you run from an existing Secret.
    "external-database": {
        "database": {"postgresql": {"enabled": False}, "external": {"existingSecret": "shop-database", "key": "dsn"}},
    },
    # Every optional feature on, and every alternative path taken.
    "all-features": {
        "image": {
            "registry": "registry.example.com/warren",
            "worker": {"digest": DIGEST},
            "api": {"digest": DIGEST},
            "operator": {"digest": DIGEST},
        },
        "imagePullSecrets": ["registry-credentials"],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "warren", "effect": "NoSchedule"}],
        "podAnnotations": {"example.com/team": "shop"},
        "warren": {"extraEnv": {"WARREN_SHOP_FAILURE_RATE": '{"payments": 0.1}'}},
        "api": {
            "replicas": 2,
            "env": {"WARREN_LOG_LEVEL": "DEBUG"},
            "ingress": {"enabled": True, "className": "nginx", "host": "shop.example.com",
                        "tlsSecretName": "shop-tls"},
            "auth": {"existingSecret": "shop-api-keys"},
        },
        "pools": {
            "payments": {"enabled": True, "replicas": 3, "prefetch": 2, "maxTaskSeconds": 5,
                         "env": {"WARREN_SHOP_PAYMENT_MAX_MS": "4000"},
                         "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                       "limits": {"cpu": "1", "memory": "512Mi"}}},
            "sms": {"enabled": False, "autoscaling": {"enabled": True}},  # a disabled pool scales nothing
            "selftest": {"enabled": True, "target": "warren.testing.selftest:pool",
                         "autoscaling": {"enabled": True, "queue": "warren.selftest", "minReplicas": 0,
                                         "maxReplicas": 3, "scaleDown": {"stabilizationSeconds": 30}}},
        },
        "workers": {"autoscaling": {"enabled": True, "drainSeconds": 20}},
        "operator": {
            "enabled": True, "logLevel": "DEBUG", "metricsPort": 9191, "metricsAnnotations": True,
            "management": {"existingSecret": "rabbitmq-monitoring", "urlKey": "management-url",
                           "passwordKey": "monitoring-password", "url": "https://monitor@rabbitmq.example.com:15671",
                           "vhost": "shop"},
        },
        "rabbitmq": {
            "replicas": 3,
            "image": {"digest": DIGEST},
            "auth": {"existingSecret": "rabbitmq-credentials", "usersExistingSecret": "rabbitmq-users"},
            "persistence": {"size": "20Gi", "storageClass": "fast-ssd"},
            "podAntiAffinity": "hard",
            "extraConfig": "vm_memory_high_watermark.relative = 0.6",
            "metricsAnnotations": True,
        },
        "database": {"postgresql": {
            "image": {"tag": "16", "digest": DIGEST},
            "auth": {"username": "shop", "database": "shop", "existingSecret": "shop-db-credentials"},
            "persistence": {"size": "20Gi", "storageClass": "fast-ssd"},
        }},
        "networkPolicy": {
            "amqpFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "billing"}}}],
            "monitoringFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        },
    },
    # The production profile shipped with the chart.
    "production": values_from_yaml((CHART / "values-production.yaml").read_text()),
    # What `make e2e` installs on kind: the operator scaling the selftest pool.
    "e2e": values_from_yaml((CHART.parents[1] / "tests" / "e2e" / "values-e2e.yaml").read_text()),
    # Operating it: scraping, alerts, a Grafana dashboard, JSON logs, the dashboard with its token.
    "monitoring": {
        "warren": {"logFormat": "json"},
        "api": {"adminToken": {"existingSecret": "warren-operators", "key": "api-token"}},
        "operator": {"enabled": True},
        "metrics": {
            "port": 9200,
            "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}, "queueAgeSeconds": 120},
            "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Warren"}},
        },
        "networkPolicy": {
            "monitoringFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        },
    },
}

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Pod")


@dataclass
class Render:
    """One value set rendered: its merged values, its manifests and the Kubernetes objects in them."""

    name: str
    namespace: str
    values: dict[str, Any]
    manifests: dict[str, str]
    objects: list[dict[str, Any]] = field(repr=False)

    @property
    def notes(self) -> str:
        return next(text for path, text in self.manifests.items() if path.endswith("NOTES.txt"))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert found, f"{self.name}: no {kind} {name}; have {[o['metadata']['name'] for o in self.of_kind(kind)]}"
        return found[0]

    def pod(self, kind: str, name: str) -> dict[str, Any]:
        """The pod spec of a workload (a Pod's own spec)."""
        o = self.get(kind, name)
        return o["spec"] if kind == "Pod" else o["spec"]["template"]["spec"]

    def main_container(self, kind: str, name: str) -> dict[str, Any]:
        return self.pod(kind, name)["containers"][0]

    def pod_specs(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(object, pod spec) of every workload, test pods included."""
        for o in self.objects:
            if o["kind"] == "Pod":
                yield o, o["spec"]
            elif o["kind"] in WORKLOAD_KINDS:
                yield o, o["spec"]["template"]["spec"]

    def containers(self) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
        """(object, pod spec, container) of every container, init containers included."""
        for o, spec in self.pod_specs():
            for c in spec.get("initContainers", []) + spec["containers"]:
                yield o, spec, c

    def workers(self) -> list[dict[str, Any]]:
        return [d for d in self.of_kind("Deployment")
                if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]

    @cached_property
    def configmap(self) -> dict[str, str]:
        """The Warren settings every role reads (envFrom)."""
        return self.get("ConfigMap", RELEASE)["data"]

    def text(self) -> str:
        return "\n".join(self.manifests.values())


def render(chart: Chart, name: str, values: dict[str, Any], *, release: str = RELEASE) -> Render:
    """Render a value set as release ``release``, in its own namespace ``warren-<name>``: checkov scans
    every set at once, and its graph checks (NetworkPolicy -> Pod) must not connect different sets."""
    namespace = f"warren-{name}"
    manifests = chart.render(values, name=release, namespace=namespace)
    objects = [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return Render(name, namespace, chart.merge_values(values), manifests, objects)
