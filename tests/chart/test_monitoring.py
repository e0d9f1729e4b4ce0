"""The chart's monitoring, specified: metrics ports on every worker and API pod, scraping by a
ServiceMonitor, Warren's alerts in a PrometheusRule and its Grafana dashboard, all off until asked
for; the operators' token reaches the API only as a mounted file.

Expressions are checked against the metrics the runtime really defines (``warren.metrics``), so a
renamed metric cannot leave an alert or a panel silently empty.
"""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client import Metric

from tests.chart.rendering import RELEASE, Render
from warren.metrics import REGISTRY
from warren_shop.api import telemetry  # noqa: F401 - registers the API's metrics on REGISTRY

MONITORING_KINDS = ("ServiceMonitor", "PrometheusRule")


def defined_metrics() -> set[str]:
    names: set[str] = set()
    for metric in REGISTRY.collect():
        names.update(sample.name for sample in metric.samples)
        names.update(_series_names(metric))
    return names


def _series_names(metric: Metric) -> set[str]:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(metric.type, ("",))
    return {metric.name + suffix for suffix in suffixes}


def warren_metrics_in(expression: str) -> set[str]:
    return set(re.findall(r"\b(warren_[a-z_]+)", expression))


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_monitoring_objects_are_off_by_default(renders) -> None:
    default = renders["default"]
    assert [o for o in default.objects if o["kind"] in MONITORING_KINDS] == []
    assert not any(o["metadata"]["name"].endswith("grafana-dashboard") for o in default.of_kind("ConfigMap"))
    assert default.configmap["WARREN_LOG_FORMAT"] == "text"


def test_every_worker_and_the_api_serve_metrics_on_a_named_port(rendered: Render) -> None:
    port = rendered.values["metrics"]["port"]
    assert rendered.configmap["WARREN_METRICS_PORT"] == str(port)
    for deployment in [*rendered.workers(), *rendered.of_kind("Deployment")]:
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        if component in ("worker", "api"):
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
    if rendered.values["api"]["enabled"]:
        ports = {p["name"]: p["port"] for p in rendered.get("Service", f"{RELEASE}-api")["spec"]["ports"]}
        assert ports["metrics"] == port
    workers = rendered.get("Service", f"{RELEASE}-worker-metrics")["spec"]
    assert workers["clusterIP"] == "None" and workers["ports"][0]["targetPort"] == "metrics"


def test_the_service_monitor_scrapes_every_service_with_a_metrics_port(renders) -> None:
    r = renders["monitoring"]
    (monitor,) = r.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    assert spec["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert spec["namespaceSelector"] == {"matchNames": [r.namespace]}
    (expression,) = spec["selector"]["matchExpressions"]

    def selected(service: dict[str, Any]) -> bool:
        labels = service["metadata"]["labels"]
        return (spec["selector"]["matchLabels"].items() <= labels.items()
                and labels.get(expression["key"]) in expression["values"])

    scraped = {s["metadata"]["name"] for s in r.of_kind("Service") if selected(s)}
    with_metrics = {s["metadata"]["name"] for s in r.of_kind("Service")
                    if any(p["name"] == "metrics" for p in s["spec"]["ports"])}
    assert scraped == with_metrics == {f"{RELEASE}-api", f"{RELEASE}-worker-metrics", f"{RELEASE}-operator-metrics"}


def test_the_alerts_watch_metrics_that_exist(renders) -> None:
    r = renders["monitoring"]
    (rule,) = r.of_kind("PrometheusRule")
    (group,) = rule["spec"]["groups"]
    alerts = {a["alert"]: a for a in group["rules"]}
    assert set(alerts) == {"WarrenDeadLettersGrowing", "WarrenPoolWithoutConsumers", "WarrenCrashLooping",
                           "WarrenQueueAge"}
    known = defined_metrics()
    for name, alert in alerts.items():
        expression = alert["expr"]
        assert f'namespace="{r.namespace}"' in expression, name  # this release's pods only
        assert warren_metrics_in(expression) <= known, name
        assert alert["labels"]["severity"] in ("warning", "critical") and alert["annotations"]["summary"]
    assert alerts["WarrenQueueAge"]["expr"].endswith("> 120")
    assert "kube_pod_container_status_restarts_total" in alerts["WarrenCrashLooping"]["expr"]


def test_the_grafana_dashboard_is_loaded_by_the_sidecar_and_plots_real_metrics(renders) -> None:
    r = renders["monitoring"]
    config_map = r.get("ConfigMap", f"{RELEASE}-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Warren"}
    dashboard = json.loads(config_map["data"]["warren.json"])
    assert dashboard["uid"] == "warren-overview" and len(dashboard["panels"]) >= 8
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= warren_metrics_in(target["expr"])
    assert used <= defined_metrics()
    assert {"warren_tasks_total", "warren_dead_letters_total", "warren_task_duration_seconds_bucket",
            "warren_tasks_in_flight", "warren_api_requests_total"} <= used


def test_only_the_scraper_reaches_the_metrics_ports(renders) -> None:
    r = renders["monitoring"]
    policies = {p["metadata"]["name"]: p["spec"] for p in r.of_kind("NetworkPolicy")}
    for component in ("worker", "api"):
        (rule,) = policies[f"{RELEASE}-{component}-metrics"]["ingress"]
        assert rule["from"] == r.values["networkPolicy"]["monitoringFrom"]
        assert rule["ports"] == [{"port": 9200, "protocol": "TCP"}]
    # The dashboard reads the bundled RabbitMQ's management API: the API, and only it, may.
    (rule,) = policies[f"{RELEASE}-rabbitmq-from-dashboard"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    assert rule["ports"] == [{"port": 15672, "protocol": "TCP"}]


def test_the_operators_token_reaches_the_api_as_a_mounted_file(renders) -> None:
    r = renders["monitoring"]
    spec = r.pod("Deployment", f"{RELEASE}-api")
    (api,) = spec["containers"]
    env = env_of(api)
    assert env["WARREN_API_ADMIN_TOKEN_FILE"] == "/etc/warren/admin/token"
    assert env["WARREN_API_MANAGEMENT_URL"] == f"http://{RELEASE}-rabbitmq.{r.namespace}.svc.cluster.local:15672"
    assert {"name": "admin-token", "mountPath": "/etc/warren/admin", "readOnly": True} in api["volumeMounts"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "admin-token"]
    assert volume["secret"] == {"secretName": "warren-operators", "items": [{"key": "api-token", "path": "token"}],
                                "defaultMode": 0o440}
    assert r.configmap["WARREN_LOG_FORMAT"] == "json"
    default_api = renders["default"].main_container("Deployment", f"{RELEASE}-api")
    assert "WARREN_API_ADMIN_TOKEN_FILE" not in env_of(default_api)  # no token, no operations: nothing default
