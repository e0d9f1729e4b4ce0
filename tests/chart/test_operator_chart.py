"""The chart's autoscaling: the operator's Deployment and least-privilege Role, the CRD in crds/,
and one WorkerAutoscaler per pool that enables it, wired to the management API so that the
operator's own credential resolution (``warren_operator.credentials.management_config_from``) finds
the broker the chart deploys."""

from __future__ import annotations

import base64
import tarfile
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python import HelmRenderError, package

from tests.chart.rendering import CHART, RELEASE, VALUE_SETS, Render, render
from tests.operator.test_operator_kmock import OPERATOR_API_CALLS
from warren.config import load
from warren_operator.config import OperatorSettings
from warren_operator.credentials import management_config_from

CRD_PATH = CHART / "crds" / "workerautoscaler.yaml"
OPERATOR = f"{RELEASE}-operator"
# The default install with the operator on and two pools autoscaled (one with its own keys).
WITH_OPERATOR = {
    "operator": {"enabled": True},
    "pools": {"payments": {"enabled": True, "autoscaling": {"enabled": True, "drainSeconds": 30, "minReplicas": 0}},
              "email": {"enabled": True, "autoscaling": {"enabled": True}}},
}


@pytest.fixture(scope="module")
def with_operator(chart) -> Render:
    return render(chart, "with-operator", WITH_OPERATOR)


def autoscalers(r: Render) -> dict[str, dict[str, Any]]:
    """WorkerAutoscaler specs by the pool they scale."""
    return {a["metadata"]["labels"]["warren/pool"]: a["spec"] for a in r.of_kind("WorkerAutoscaler")}


def rules(r: Render) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    """The operator Role's rules: (api group, resource, resource names, verbs), one per resource."""
    return sorted((group, resource, tuple(rule.get("resourceNames", ())), tuple(sorted(rule["verbs"])))
                  for rule in r.get("Role", OPERATOR)["rules"]
                  for group in rule["apiGroups"] for resource in rule["resources"])


@pytest.mark.parametrize("version", ["1.29.0", kubernetes_validate.latest_version()])
def test_the_crd_is_a_valid_crd_and_ships_in_the_package(chart, tmp_path, version: str) -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    kubernetes_validate.validate(crd, version, strict=True)
    with tarfile.open(package(CHART, destination=tmp_path)) as archive:
        assert "warren/crds/workerautoscaler.yaml" in archive.getnames()
    # Helm installs crds/ before the templates, and never templates it (nor deletes it on uninstall).
    manifests = render(chart, "crd", WITH_OPERATOR).manifests
    assert not any("CustomResourceDefinition" in text for text in manifests.values())


def test_no_operator_and_no_autoscaling_by_default(renders) -> None:
    default = renders["default"]
    components = [o["metadata"]["labels"].get("app.kubernetes.io/component") for o in default.objects]
    assert "operator" not in components
    assert default.of_kind("WorkerAutoscaler") == []
    assert [r["metadata"]["name"] for r in default.of_kind("Role")] == [f"{RELEASE}-rabbitmq-peer-discovery"]
    assert all("replicas" in d["spec"] for d in default.of_kind("Deployment"))


def test_one_worker_autoscaler_per_enabled_pool_that_asks_for_it(renders, with_operator) -> None:
    assert set(autoscalers(with_operator)) == {"payments", "email"}
    full = renders["all-features"]
    # workers.autoscaling.enabled turns it on for every enabled pool; sms is disabled.
    enabled = {pool for pool, spec in full.values["pools"].items() if spec["enabled"]}
    assert set(autoscalers(full)) == enabled and "sms" not in enabled
    for pool, spec in autoscalers(full).items():
        deployment = full.get("Deployment", spec["targetRef"]["name"])
        assert deployment["metadata"]["labels"]["warren/pool"] == pool
        assert spec["prefetch"] == full.values["pools"][pool].get("prefetch", full.values["workers"]["prefetch"])
        assert spec["queue"] == f"warren.{pool}"
        assert spec["managementSecretRef"]["name"] == "rabbitmq-monitoring" and spec["vhost"] == "shop"


def test_a_pools_own_autoscaling_keys_win_one_by_one(renders, with_operator) -> None:
    selftest = autoscalers(renders["all-features"])["selftest"]
    assert selftest["minReplicas"] == 0 and selftest["maxReplicas"] == 3  # its own
    assert selftest["target"] == {"drainSeconds": 20}  # workers.autoscaling
    assert selftest["scaleDown"] == {"stabilizationSeconds": 30, "maxStep": 2}  # one key its own, one default
    payments, email = autoscalers(with_operator)["payments"], autoscalers(with_operator)["email"]
    assert payments["minReplicas"] == 0 and payments["target"] == {"drainSeconds": 30}
    assert email["minReplicas"] == 1 and email["target"] == {"messagesPerReplica": 20}
    assert email["scaleDown"] == {"stabilizationSeconds": 60, "maxStep": 2} and email["pollSeconds"] == 5


def test_the_operator_owns_the_replicas_of_the_pools_it_scales(with_operator) -> None:
    for deployment in with_operator.workers():
        autoscaled = deployment["metadata"]["labels"]["warren/pool"] in ("payments", "email")
        # Left out, an upgrade keeps the operator's count instead of resetting it.
        assert ("replicas" in deployment["spec"]) is not autoscaled, deployment["metadata"]["name"]


def test_workers_name_their_connection_after_their_pod(with_operator) -> None:
    for deployment in with_operator.workers():
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["WARREN_WORKER_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_the_operator_role_grants_only_what_it_does(renders, with_operator) -> None:
    for r in (with_operator, renders["all-features"], renders["external-broker"], renders["production"]):
        assert r.of_kind("ClusterRole") == [] and r.of_kind("ClusterRoleBinding") == []
        scaled = tuple(sorted(spec["targetRef"]["name"] for spec in autoscalers(r).values()))
        (secret,) = {spec["managementSecretRef"]["name"] for spec in autoscalers(r).values()}
        assert rules(r) == sorted([
            # kopf: its resources (read only: no finalizer), their status, Events.
            ("warren.dev", "workerautoscalers", (), ("list", "watch")),
            ("warren.dev", "workerautoscalers/status", (), ("patch",)),
            ("", "events", (), ("create",)),
            # The decision: one Secret, the scale of the autoscaled Deployments only, and the pods'
            # deletion-cost annotation.
            ("", "secrets", (secret,), ("get",)),
            ("apps", "deployments/scale", scaled, ("get", "patch")),
            ("", "pods", (), ("list", "patch")),
        ]), r.name
        # Exactly the calls the real operator made in its kmock story, no more, no fewer.
        assert {(group, resource, verb) for group, resource, _, verbs in rules(r) for verb in verbs} == \
            OPERATOR_API_CALLS
        binding = r.get("RoleBinding", OPERATOR)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OPERATOR}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": r.namespace}]


def test_with_no_pool_autoscaled_the_role_names_no_deployment(chart) -> None:
    r = render(chart, "operator-only", {"operator": {"enabled": True}})
    # An empty resourceNames would grant every Deployment's scale: the rule is left out instead.
    assert [rule for rule in rules(r) if rule[1] == "deployments/scale"] == []


def test_the_operator_runs_hardened_with_probes_and_watches_its_namespace(renders) -> None:
    r = renders["all-features"]
    deployment = r.get("Deployment", OPERATOR)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = r.main_container("Deployment", OPERATOR)
    assert container["image"].endswith("/warren-operator@" + r.values["image"]["operator"]["digest"])
    env = {e["name"]: e for e in container["env"]}
    assert env["WARREN_OPERATOR_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["WARREN_OPERATOR_METRICS_PORT"]["value"] == "9191"
    assert env["WARREN_OPERATOR_LOG_LEVEL"]["value"] == "DEBUG"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9191}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9191"
    service = r.get("Service", f"{RELEASE}-operator-metrics")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9191, "targetPort": "metrics", "protocol": "TCP"}]


def _secret_data(r: Render, name: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in r.get("Secret", name)["data"].items()}


def test_the_operator_logs_in_as_its_own_monitoring_user(with_operator) -> None:
    """Not the administrator: the bundled broker's "operator" user, whose Secret holds its password
    only (no AMQP URL: it has no AMQP permission), which nothing but the operator and the RabbitMQ
    pods read."""
    spec = autoscalers(with_operator)["payments"]
    assert spec["managementSecretRef"]["name"] == f"{RELEASE}-broker-operator"
    data = _secret_data(with_operator, spec["managementSecretRef"]["name"])
    assert set(data) == {"username", "password"}
    config = management_config_from(spec, data)
    assert config.base_url == f"http://{RELEASE}-rabbitmq.{with_operator.namespace}.svc.cluster.local:15672"
    assert config.username == "operator" and config.password.get_secret_value() == data["password"]
    assert ":" not in spec["managementUrl"].split("@")[0].split("//")[1], "no password in the spec"


def test_with_users_from_an_existing_secret_the_operator_reads_its_key(chart) -> None:
    r = render(chart, "operator-users", {**WITH_OPERATOR, "rabbitmq": {"auth": {
        "existingSecret": "rabbitmq-credentials", "usersExistingSecret": "rabbitmq-users"}}})
    spec = autoscalers(r)["payments"]
    assert spec["managementSecretRef"]["name"] == "rabbitmq-users"
    config = management_config_from(spec, {"operator": "m0nitor", "api": "other", "topology": "other"})
    assert (config.base_url, config.username, config.password.get_secret_value()) == (
        f"http://{RELEASE}-rabbitmq.{r.namespace}.svc.cluster.local:15672", "operator", "m0nitor")


def test_the_operator_finds_an_external_broker_from_the_roles_url(renders) -> None:
    r = renders["external-broker"]
    spec = autoscalers(r)["email"]
    assert spec["managementSecretRef"]["name"] == "shared-broker" and "managementUrl" not in spec
    config = management_config_from(spec, {"amqp-url": "amqps://shop:s3cret@broker.example.com:5671/shop"})
    assert (config.base_url, config.username, config.password.get_secret_value()) == (
        "https://broker.example.com:15671", "shop", "s3cret")


def test_the_operator_takes_a_monitoring_secret_of_its_own(renders) -> None:
    spec = autoscalers(renders["all-features"])["payments"]
    config = management_config_from(spec, {"monitoring-password": "m0nitor"})
    assert (config.base_url, config.username, config.password.get_secret_value()) == (
        "https://rabbitmq.example.com:15671", "monitor", "m0nitor")


def test_network_policies_let_the_operator_reach_the_management_api_and_nothing_reach_it(
    renders, with_operator
) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in with_operator.of_kind("NetworkPolicy")}
    management = [rule for rule in policies[f"{RELEASE}-rabbitmq"]["ingress"]
                  if [p["port"] for p in rule["ports"]] == [15672]]
    assert [rule["from"] for rule in management] == [[{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "warren", "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "operator"}}}]]
    assert "ingress" not in policies[OPERATOR]  # no monitoringFrom: nothing may connect
    full = {p["metadata"]["name"]: p["spec"] for p in renders["all-features"].of_kind("NetworkPolicy")}
    assert full[OPERATOR]["ingress"] == [{"from": VALUE_SETS["all-features"]["networkPolicy"]["monitoringFrom"],
                                          "ports": [{"port": 9191, "protocol": "TCP"}]}]


@pytest.mark.parametrize(("values", "message"), [
    ({"pools": {"payments": {"enabled": True, "autoscaling": {"enabled": True}}}},
     "pools.payments.autoscaling: autoscaling needs the operator; set operator.enabled=true"),
    ({"operator": {"enabled": True},
      "pools": {"payments": {"enabled": True, "autoscaling": {"enabled": True, "minReplicas": 4, "maxReplicas": 2}}}},
     "pools.payments.autoscaling: minReplicas (4) is above maxReplicas (2)"),
])
def test_unusable_autoscaling_values_fail_the_render_saying_why(chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmRenderError) as raised:
        chart.render(values, name=RELEASE, namespace="warren")
    assert message in str(raised.value)


def test_the_operator_settings_the_chart_gives_are_valid_operator_settings(renders) -> None:
    for r in (renders["all-features"], renders["production"]):
        env = {e["name"]: e.get("value") for e in r.main_container("Deployment", OPERATOR)["env"]}
        env["WARREN_OPERATOR_NAMESPACE"] = r.namespace  # the downward API's metadata.namespace
        settings = load(OperatorSettings, **{k.removeprefix("WARREN_OPERATOR_").lower(): v for k, v in env.items()})
        assert (settings.namespace, settings.health_port) == (r.namespace, 8080)
        assert settings.metrics_port == r.values["operator"]["metricsPort"]
