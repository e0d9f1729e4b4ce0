"""The Helm chart, specified: it renders for every value set, Helm lints it clean, every object is
valid against the official Kubernetes schemas, checkov finds nothing, and the properties that matter
hold (no default credentials, hardened containers, graceful drains, a quorum-queue cluster).

No cluster is needed: rendering, the values schema and lint are Helm's own engine
(helm-python-sdk); `kubernetes-validate` holds the Kubernetes schemas; checkov runs as a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import subprocess
import sys
import time
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helm_python import Chart, HelmRenderError, HelmValuesError, lint, package, values_from_yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

from tests.chart.rabbitmq import decoded, definitions, rabbitmq_config, run_setup, user_secret, users
from tests.chart.rendering import CHART, DIGEST, RELEASE, VALUE_SETS, Render, render
from warren.config import load, settings_from_env
from warren.worker.pool import registered_pools
from warren_shop.settings import ApiSettings

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas there are.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())

# Every checkov check the chart skips, and why. A skip is written next to what it excuses, as a
# `checkov.io/skipN: CHECK=reason` annotation in the templates.
ALLOWED_SKIPS = {
    "CKV_K8S_43": "images pinned by release tag; setting a digest removes the skip",
    "CKV_K8S_15": "IfNotPresent with an immutable release tag; setting a digest removes the skip",
    "CKV_K8S_40": "the official RabbitMQ and PostgreSQL images' fixed UID 999",
    "CKV_K8S_38": "RabbitMQ up to 4.0 reads its peers, and the operator scales Deployments, through the Kubernetes API",
    "CKV_K8S_8": "helm test pods run one command to completion (no liveness probe)",
    "CKV_K8S_9": "helm test pods receive no traffic (no readiness probe)",
}

# The chart's CRD (crds/): the WorkerAutoscalers it renders are validated against its OpenAPI
# schema, whose bounds are JSON Schema draft 4's.
CRD = yaml.safe_load((CHART / "crds" / "workerautoscaler.yaml").read_text())
CUSTOM_RESOURCE_VERSION = f"{CRD['spec']['group']}/{CRD['spec']['versions'][0]['name']}"
CUSTOM_RESOURCE_SCHEMA = jsonschema.Draft4Validator(CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"])

MONITORING_VERSION = "monitoring.coreos.com/v1"
SHOP_POOLS = ("orders", "inventory", "payments", "shipping", "email", "sms", "analytics", "audit")
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def pool_settings(r: Render, pool: str) -> dict[str, Any]:
    """A pool's effective settings: workers.* defaults under the pool's own keys."""
    return {**r.values["workers"], **r.values["pools"][pool]}


# -- Helm: render, lint, package ---------------------------------------------------------------


def test_every_value_set_renders_objects_and_notes(rendered: Render) -> None:
    kinds = {o["kind"] for o in rendered.objects}
    assert {"ConfigMap", "Deployment", "PodDisruptionBudget", "Pod"} <= kinds
    assert all(o["metadata"]["namespace"] == rendered.namespace
               for o in rendered.objects if o["kind"] not in ("ClusterRole", "ClusterRoleBinding"))
    assert f"helm test {RELEASE} --namespace {rendered.namespace}" in rendered.notes


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_helm_lint_is_clean(value_set: str) -> None:
    report = lint(CHART, VALUE_SETS[value_set], strict=True, namespace="warren", kube_version="v1.29.0")
    assert report["errors"] == []
    # Severity 1 is information ("icon is recommended"): nothing to warn about, nothing wrong.
    assert [m for m in report["messages"] if m["severity"] > 1] == []


def test_the_chart_packages_and_the_package_renders(chart, tmp_path) -> None:
    archive = package(CHART, destination=tmp_path)
    assert archive.endswith(f"warren-{chart.version}.tgz")
    with Chart.load(archive) as packaged:
        assert render(packaged, "packaged", {}).get("StatefulSet", f"{RELEASE}-rabbitmq")


# -- Kubernetes schemas and checkov ------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(rendered: Render, version: str) -> None:
    problems = []
    for o in rendered.objects:
        if o["apiVersion"] == CUSTOM_RESOURCE_VERSION:  # ours: its CRD's schema, not Kubernetes'
            problems += [f"{o['kind']} {o['metadata']['name']}: {e.message} at {'/'.join(map(str, e.path))}"
                         for e in CUSTOM_RESOURCE_SCHEMA.iter_errors(o)]
            continue
        if o["apiVersion"] == MONITORING_VERSION:  # the Prometheus Operator's: tests/chart/test_monitoring.py
            continue
        try:
            kubernetes_validate.validate(o, version, strict=True)  # strict: unknown fields rejected
        except ValidationError as e:
            problems.append(f"{o['kind']} {o['metadata']['name']}: {e.message} at {'/'.join(map(str, e.path))}")
        except SchemaNotFoundError as e:
            problems.append(e.message)
    assert problems == []


def test_checkov_finds_nothing(checkov_report: dict[str, Any]) -> None:
    failed = [(f["check_id"], f["check_name"], f["resource"].split(".")[:3], f["file_path"])
              for f in checkov_report["results"]["failed_checks"]]
    assert failed == []
    assert checkov_report["summary"]["passed"] > 1000


def test_checkov_skips_are_few_and_give_a_reason(checkov_report: dict[str, Any]) -> None:
    skipped = checkov_report["results"].get("skipped_checks", [])
    assert {s["check_id"] for s in skipped} <= set(ALLOWED_SKIPS)
    reasons = {s["check_result"]["suppress_comment"] for s in skipped}
    assert all(len(reason) > 30 and reason != "No comment provided" for reason in reasons), reasons


def test_images_pinned_by_digest_need_no_skips(renders) -> None:
    for o, _spec in renders["all-features"].pod_specs():
        annotations = o["metadata"].get("annotations", {})
        skipped = [v for v in annotations.values() if v.startswith(("CKV_K8S_43", "CKV_K8S_15"))]
        assert skipped == [], o["metadata"]["name"]


def test_skip_annotations_name_one_check_and_a_reason(rendered: Render) -> None:
    for o in rendered.objects:
        for key, value in o["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                assert check in ALLOWED_SKIPS and reason and "=" not in reason, (o["metadata"]["name"], value)


# -- Credentials -------------------------------------------------------------------------------


def test_no_default_credentials_anywhere(rendered: Render) -> None:
    assert "guest" not in rendered.text().lower()
    for s in rendered.of_kind("Secret"):
        for key, value in decoded(s).items():
            assert value and "guest" not in value.lower(), (s["metadata"]["name"], key)
    for name, value in rendered.configmap.items():
        assert not CREDENTIALS_IN_URL.search(value), name


def test_generated_credentials_are_random_and_each_user_has_its_own(chart, renders) -> None:
    r = renders["production"]
    rabbitmq = decoded(r.get("Secret", f"{RELEASE}-rabbitmq"))
    password, cookie = rabbitmq["rabbitmq-password"], rabbitmq["rabbitmq-erlang-cookie"]
    assert len(password) == 32 and len(cookie) == 64
    assert set(password + cookie) <= set(string.ascii_letters + string.digits)
    # A Secret per role's user: its password, and the whole URL for the roles that use AMQP.
    roles = set(users(r)) - {"warren"}
    assert {s["metadata"]["name"] for s in r.of_kind("Secret")} == {
        f"{RELEASE}-rabbitmq", *(f"{RELEASE}-broker-{user}" for user in roles),
        f"{RELEASE}-postgresql", f"{RELEASE}-database", f"{RELEASE}-api-keys"}  # and the database's, the API's keys
    host = f"{RELEASE}-rabbitmq.{r.namespace}.svc.cluster.local"
    passwords = {password}
    for user in roles:
        secret = user_secret(r, user)
        assert secret["username"] == user and len(secret["password"]) == 32, user
        assert set(secret["password"]) <= set(string.ascii_letters + string.digits), user
        if user == "operator":  # the management API only: no AMQP URL
            assert "url" not in secret
        else:
            assert secret["url"] == f"amqp://{user}:{secret['password']}@{host}:5672/%2F"
        passwords.add(secret["password"])
    assert len(passwords) == len(roles) + 1
    again = render(chart, "production", VALUE_SETS["production"])
    assert decoded(again.get("Secret", f"{RELEASE}-rabbitmq"))["rabbitmq-password"] != password
    assert user_secret(again, "api")["password"] != user_secret(r, "api")["password"]  # lookup keeps them


def test_an_upgrade_that_cannot_read_the_credentials_fails_instead_of_replacing_them(chart) -> None:
    """Under `helm template` (GitOps) or without `get` on Secrets lookup finds nothing: new random
    credentials would lock every role out and stop the nodes clustering."""
    with pytest.raises(HelmRenderError) as raised:
        chart.render({}, name=RELEASE, namespace="warren", is_upgrade=True, is_install=False)
    assert "rabbitmq.auth.existingSecret" in str(raised.value) and f"Secret {RELEASE}-rabbitmq" in str(raised.value)
    # The administrator's credentials managed outside Helm, not the users': blind, the chart would
    # generate the users' passwords anew on every render (Argo CD renders as an install).
    for is_upgrade in (True, False):
        with pytest.raises(HelmRenderError) as raised:
            chart.render({"rabbitmq": {"auth": {"existingSecret": "rabbitmq-credentials"}}}, name=RELEASE,
                         namespace="warren", is_upgrade=is_upgrade, is_install=not is_upgrade)
        assert "rabbitmq.auth.usersExistingSecret" in str(raised.value)
    # With all the credentials managed outside Helm there is nothing to generate: the upgrade renders.
    upgraded = chart.render({"rabbitmq": {"auth": {"existingSecret": "rabbitmq-credentials",
                                                   "usersExistingSecret": "rabbitmq-users"}},
                             "api": {"auth": {"existingSecret": "shop-api-keys"}}},
                            name=RELEASE, namespace="warren", is_upgrade=True, is_install=False)
    assert "kind: StatefulSet" in upgraded[f"{RELEASE}/templates/rabbitmq-statefulset.yaml"]


def test_the_rabbitmq_secret_outlives_the_release(renders) -> None:
    secret = renders["default"].get("Secret", f"{RELEASE}-rabbitmq")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_credentials_reach_containers_only_as_mounted_files(rendered: Render) -> None:
    for o, spec, c in rendered.containers():
        for e in c.get("env", []):
            assert "secretKeyRef" not in e.get("valueFrom", {}), (o["metadata"]["name"], c["name"], e["name"])
            assert not CREDENTIALS_IN_URL.search(e.get("value") or ""), (o["metadata"]["name"], e["name"])
        env = env_of(c)
        files = [v for k, v in env.items() if k in ("WARREN_BROKER_URL_FILE", "WARREN_BROKER_PASSWORD_FILE")]
        for path in files:
            (mount,) = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
            (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
            assert "secret" in volume and mount["readOnly"] is True


def test_every_warren_container_gets_the_broker_from_a_secret_file(rendered: Render) -> None:
    for o, _spec, c in rendered.containers():
        # The database migration and the helm test's HTTP request need no broker.
        if (c["image"].split("/")[-1].startswith(("warren-worker", "warren-api"))
                and c["name"] not in ("api-ready", "db-upgrade")):
            files = {"WARREN_BROKER_URL_FILE", "WARREN_BROKER_PASSWORD_FILE"} & env_of(c).keys()
            assert files, (o["metadata"]["name"], c["name"])


def test_an_external_broker_comes_from_its_secret(renders) -> None:
    r = renders["external-broker"]
    assert [s["metadata"]["name"] for s in r.of_kind("StatefulSet")] == [f"{RELEASE}-postgresql"]
    secrets = sorted(s["metadata"]["name"] for s in r.of_kind("Secret"))
    assert secrets == [f"{RELEASE}-api-keys", f"{RELEASE}-database", f"{RELEASE}-postgresql"]  # none for a broker
    roles = [(spec, c) for _o, spec, c in r.containers() if "WARREN_BROKER_URL_FILE" in env_of(c)]
    assert len(roles) == 2 * 8 + 1 + 3  # topology and worker per pool, the api, three test containers
    for spec, _c in roles:
        (volume,) = [v for v in spec["volumes"] if v["name"] == "broker"]
        assert volume["secret"]["secretName"] == "shared-broker"
        assert volume["secret"]["items"] == [{"key": "amqp-url", "path": "url"}]
    assert "WARREN_BROKER_URL" not in r.configmap


def test_existing_secrets_are_used_as_is(renders) -> None:
    r = renders["all-features"]
    assert r.of_kind("Secret") == []
    volumes = {v["name"]: v for v in r.pod("StatefulSet", f"{RELEASE}-rabbitmq")["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "rabbitmq-credentials"
    roles = sorted(set(users(r)) - {"warren"})
    assert volumes["users"]["projected"]["sources"] == [
        {"secret": {"name": "rabbitmq-users", "items": [{"key": user, "path": user} for user in roles]}}]
    # Their passwords cannot be put in a URL at render time: each role gets its user's as a file.
    assert r.configmap["WARREN_BROKER_URL"] == f"amqp://{RELEASE}-rabbitmq.{r.namespace}.svc.cluster.local:5672/%2F"
    assert "WARREN_BROKER_USERNAME" not in r.configmap
    api = r.pod("Deployment", f"{RELEASE}-api")
    env = env_of(api["containers"][0])
    assert (env["WARREN_BROKER_USERNAME"], env["WARREN_BROKER_PASSWORD_FILE"]) == ("api", "/etc/warren/broker/password")
    assert next(v for v in api["volumes"] if v["name"] == "broker")["secret"]["items"] == [
        {"key": "api", "path": "password"}]


# -- Containers --------------------------------------------------------------------------------


def test_every_container_is_non_root_hardened_with_requests_and_limits(rendered: Render) -> None:
    for o, spec, c in rendered.containers():
        where = f"{o['kind']} {o['metadata']['name']} container {c['name']}"
        pod, sc = spec["securityContext"], c["securityContext"]
        assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", pod.get("runAsUser")) > 0, where
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
        assert sc["capabilities"] == {"drop": ["ALL"]}, where
        assert sc.get("seccompProfile", pod.get("seccompProfile")) == {"type": "RuntimeDefault"}, where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"


def test_warren_pods_run_as_the_image_user_without_a_token_or_service_links(rendered: Render) -> None:
    for o, spec in rendered.pod_specs():
        component = o["metadata"]["labels"]["app.kubernetes.io/component"]
        if component in ("rabbitmq", "postgresql"):  # the official images' own users
            assert spec["securityContext"]["runAsUser"] == 999 and spec["securityContext"]["fsGroup"] == 999
            continue
        assert spec["securityContext"]["runAsUser"] == 10001 and spec["securityContext"]["fsGroup"] == 10001
        # Only the operator talks to the Kubernetes API, with a ServiceAccount of its own.
        assert spec["automountServiceAccountToken"] is (component == "operator")
        assert (spec["serviceAccountName"] == f"{RELEASE}-operator") is (component == "operator")
        # A Service named warren-api would otherwise inject WARREN_API_PORT=tcp://...
        assert spec["enableServiceLinks"] is False


def test_the_settings_given_to_warren_are_valid_warren_settings(rendered: Render) -> None:
    for _o, _spec, c in rendered.containers():
        if c["image"].split("/")[-1].startswith("warren-") and c["name"] != "api-ready":
            env = {**rendered.configmap, **env_of(c)}
            settings_from_env(env)  # raises ConfigError naming the setting
            if c["name"] == "api":
                load(ApiSettings, **{k.removeprefix("WARREN_API_").lower(): v
                                     for k, v in env.items() if k.startswith("WARREN_API_")})


def test_images_default_to_the_chart_version_and_honour_registry_and_digest(chart, renders) -> None:
    api = renders["default"].main_container("Deployment", f"{RELEASE}-api")
    assert api["image"] == f"warren-api:{chart.metadata['appVersion']}"
    worker = renders["all-features"].pod("Deployment", f"{RELEASE}-worker-payments")
    assert worker["containers"][0]["image"] == f"registry.example.com/warren/warren-worker@{DIGEST}"
    assert worker["imagePullSecrets"] == [{"name": "registry-credentials"}]
    rabbitmq = renders["default"].main_container("StatefulSet", f"{RELEASE}-rabbitmq")
    assert rabbitmq["image"] == "rabbitmq:3.13-management"


# -- Worker pools ------------------------------------------------------------------------------


def test_one_worker_deployment_and_disruption_budget_per_enabled_pool(rendered: Render) -> None:
    enabled = {p for p, spec in rendered.values["pools"].items() if spec["enabled"]}
    assert {d["metadata"]["labels"]["warren/pool"] for d in rendered.workers()} == enabled
    budgets = {b["metadata"]["name"]: b["spec"] for b in rendered.of_kind("PodDisruptionBudget")}
    for pool in enabled:
        # maxUnavailable 1: pods go one at a time, and a single replica never blocks a node drain.
        assert budgets[f"{RELEASE}-worker-{pool}"]["maxUnavailable"] == 1


def test_the_shop_pools_are_the_defaults(renders) -> None:
    defaults = renders["default"].values["pools"]
    assert set(defaults) == set(SHOP_POOLS) and all(p["enabled"] for p in defaults.values())
    assert set(SHOP_POOLS) <= set(registered_pools())  # each a pool `warren worker` knows
    assert defaults["payments"]["maxTaskSeconds"] == 5 and defaults["email"]["maxTaskSeconds"] == 15


def test_a_worker_applies_its_topology_then_consumes_its_pool(rendered: Render) -> None:
    for d in rendered.workers():
        pool = d["metadata"]["labels"]["warren/pool"]
        target = rendered.values["pools"][pool].get("target", pool)
        spec = d["spec"]["template"]["spec"]
        *database, init = spec["initContainers"]  # a shop pool migrates its database first
        assert [c["name"] for c in database] == ([] if "target" in rendered.values["pools"][pool] else ["db-upgrade"])
        # It waits for the broker (no crash loop while RabbitMQ starts) and, with a cluster, for
        # every node: quorum queues declared earlier would get fewer members.
        wait = ["--wait", str(rendered.values["workers"]["topologyWaitSeconds"])]
        rabbitmq = rendered.values["rabbitmq"]
        clustered = rabbitmq["enabled"] and rabbitmq["replicas"] > 1
        nodes = ["--wait-for-nodes", str(rabbitmq["replicas"])] if clustered else []
        assert init["command"] == ["warren", "topology", "apply", target, *wait, *nodes]
        (worker,) = spec["containers"]
        assert worker["command"] + worker["args"] == ["warren", "worker", target]
        assert env_of(worker)["WARREN_PREFETCH"] == str(pool_settings(rendered, pool)["prefetch"])
        assert any(v["name"] == "tmp" and "emptyDir" in v for v in spec["volumes"])
        assert {"name": "tmp", "mountPath": "/tmp"} in worker["volumeMounts"]


def test_each_pool_drains_its_tasks_before_the_kubelet_kills_it(rendered: Render) -> None:
    for d in rendered.workers():
        pool = d["metadata"]["labels"]["warren/pool"]
        settings = pool_settings(rendered, pool)
        longest_drain = settings["maxTaskSeconds"] * settings["prefetch"]
        grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        worker_gives_up = float(env_of(d["spec"]["template"]["spec"]["containers"][0])["WARREN_SHUTDOWN_GRACE"])
        assert grace > longest_drain, pool
        assert longest_drain < worker_gives_up <= grace - 5, pool  # the worker stops before SIGKILL


@pytest.mark.parametrize(
    ("health_file", "ready", "alive"),
    [
        ("fresh", True, True),  # consuming
        ("stale", False, False),  # the loop hangs: restart it
        ("absent", False, True),  # reconnecting to the broker in-process: not ready, but alive
    ],
)
def test_worker_probes_judge_the_health_file(renders, tmp_path, health_file: str, ready: bool, alive: bool) -> None:
    worker = renders["default"].main_container("Deployment", f"{RELEASE}-worker-payments")
    assert renders["default"].configmap["WARREN_HEALTH_FILE"] == "/tmp/warren-health"
    path = tmp_path / "warren-health"
    if health_file != "absent":
        path.write_text("1\n")
    if health_file == "stale":
        os.utime(path, (time.time() - 60, time.time() - 60))
    env = {**os.environ, "WARREN_HEALTH_FILE": str(path)}
    passes = {}
    for probe in ("readinessProbe", "livenessProbe"):
        command = worker[probe]["exec"]["command"]
        assert command[0] == "python"  # the image has python, not necessarily find or stat
        passes[probe] = subprocess.run([sys.executable, *command[1:]], env=env, check=False).returncode == 0
    assert passes == {"readinessProbe": ready, "livenessProbe": alive}


def test_the_api_serves_8080_with_health_and_readiness_probes(renders) -> None:
    r = renders["default"]
    (api,) = r.get("Deployment", f"{RELEASE}-api")["spec"]["template"]["spec"]["containers"]
    assert api["ports"][0] == {"name": "http", "containerPort": 8080}  # and metrics: test_monitoring.py
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert r.get("Service", f"{RELEASE}-api")["spec"]["ports"][0]["port"] == 8080


# -- RabbitMQ ----------------------------------------------------------------------------------


def conf_lines(r: Render) -> dict[str, str]:
    lines = (line.split("=", 1) for line in rabbitmq_config(r)["rabbitmq.conf"].splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in lines}


def test_the_default_broker_is_one_node_for_development(renders) -> None:
    r = renders["default"]
    sts = r.get("StatefulSet", f"{RELEASE}-rabbitmq")
    assert sts["spec"]["replicas"] == 1
    pre_stop = sts["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][2]
    assert "await_online_quorum_plus_one" not in pre_stop  # no quorum to wait for
    assert "rabbitmq-upgrade drain" in pre_stop


def test_the_three_node_profile_clusters_for_quorum_queues(renders) -> None:
    r = renders["three-node"]
    sts = r.get("StatefulSet", f"{RELEASE}-rabbitmq")
    headless = f"{RELEASE}-rabbitmq-headless"
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel" and sts["spec"]["serviceName"] == headless
    conf = conf_lines(r)
    assert conf["cluster_formation.peer_discovery_backend"] == "rabbit_peer_discovery_k8s"
    assert conf["cluster_formation.k8s.host"] == "kubernetes.default.svc.cluster.local"
    assert conf["cluster_formation.k8s.address_type"] == "hostname"
    assert conf["cluster_formation.k8s.service_name"] == headless
    assert conf["cluster_formation.k8s.hostname_suffix"] == f".{headless}.{r.namespace}.svc.cluster.local"
    assert conf["cluster_partition_handling"] == "pause_minority"
    assert conf["queue_leader_locator"] == "balanced"
    assert "{quorum_cluster_size, 3}" in rabbitmq_config(r)["advanced.config"]
    # Queues declared before every node joined (a fresh install, a scale-up) grow to 3 members.
    assert "{quorum_membership_reconciliation_enabled, true}" in rabbitmq_config(r)["advanced.config"]
    assert "{quorum_membership_reconciliation_target_group_size, 3}" in rabbitmq_config(r)["advanced.config"]
    assert conf["cluster_formation.target_cluster_size_hint"] == "3"
    assert "The workers' topology step waits until all 3 nodes run" in r.notes
    assert r.configmap["WARREN_QUEUE_TYPE"] == "quorum"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"][2].splitlines()
    # A majority for every quorum queue elsewhere first, then the node drained (clients, leaders moved).
    assert [line.split()[:2] for line in pre_stop if not line.startswith("#")] == [
        ["rabbitmq-upgrade", "await_online_quorum_plus_one"], ["rabbitmq-upgrade", "drain"]]
    # Node names are what peer discovery rebuilds: host name + cluster_formation.k8s.hostname_suffix.
    suffix = conf["cluster_formation.k8s.hostname_suffix"].replace(r.namespace, "$(MY_POD_NAMESPACE)")
    assert env_of(container)["RABBITMQ_NODENAME"] == f"rabbit@$(MY_POD_NAME){suffix}"
    assert r.get("PodDisruptionBudget", f"{RELEASE}-rabbitmq")["spec"]["maxUnavailable"] == 1
    assert r.get("Service", headless)["spec"]["publishNotReadyAddresses"] is True


def test_the_alarms_count_on_the_container_not_the_host(renders) -> None:
    conf = conf_lines(renders["default"])
    limit = 1024**3  # values.yaml: a 1Gi memory limit
    assert int(conf["total_memory_available_override_value"]) == limit - limit // 5
    assert conf["vm_memory_high_watermark.relative"] == "0.6"
    assert int(conf["disk_free_limit.absolute"]) == 2 * 1024**3  # not the 50 MB default: an 8Gi volume


def test_a_disk_limit_above_half_the_volume_fails_the_render(chart) -> None:
    with pytest.raises(HelmRenderError, match=r"rabbitmq\.diskFreeLimit"):
        chart.render({"rabbitmq": {"diskFreeLimit": "5Gi"}}, name=RELEASE, namespace="warren")


def test_an_autoscaled_deployment_renders_its_live_replicas(chart, tmp_path) -> None:
    """Switching autoscaling on must not reset a pool to 1 (Helm drops a field the chart stops
    rendering): the template renders the live count. No cluster here, so the helper that decides is
    rendered by Helm with what lookup would return."""
    probe = tmp_path / "warren"
    shutil.copytree(CHART, probe)
    cases = {"on-live": '(dict "autoscaled" true "replicas" 2 "live" (dict "spec" (dict "replicas" 7)))',
             "on-new": '(dict "autoscaled" true "replicas" 2 "live" dict)',
             "off-live": '(dict "autoscaled" false "replicas" 2 "live" (dict "spec" (dict "replicas" 7)))'}
    lines = [f'  {case}: {{{{ include "warren.workerReplicas" {args} | quote }}}}' for case, args in cases.items()]
    (probe / "templates" / "zz-probe.yaml").write_text(
        "\n".join(["apiVersion: v1", "kind: ConfigMap", "metadata: {name: probe}", "data:", *lines, ""]))
    with Chart.load(probe) as loaded:
        data = yaml.safe_load(loaded.render({}, name=RELEASE, namespace="warren")[f"{RELEASE}/templates/zz-probe.yaml"])
    assert data["data"] == {"on-live": "replicas: 7", "on-new": "", "off-live": "replicas: 2"}
    template = (CHART / "templates" / "worker-deployments.yaml").read_text()
    assert '"live" (lookup "apps/v1" "Deployment"' in template


def test_the_plugins_and_ports(renders) -> None:
    r = renders["three-node"]
    plugins = rabbitmq_config(r)["enabled_plugins"]
    for plugin in ("rabbitmq_management", "rabbitmq_peer_discovery_k8s", "rabbitmq_prometheus"):
        assert plugin in plugins
    container = r.get("StatefulSet", f"{RELEASE}-rabbitmq")["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in container["ports"]} >= {5672, 15672, 15692, 4369, 25672}


def test_peer_discovery_may_only_get_its_own_endpoints_and_post_events(renders) -> None:
    r = renders["three-node"]
    rules = r.get("Role", f"{RELEASE}-rabbitmq-peer-discovery")["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["endpoints"],
                      "resourceNames": [f"{RELEASE}-rabbitmq-headless"], "verbs": ["get"]},
                     # the plugin records its cluster-formation steps as Events on its pod
                     {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    binding = r.get("RoleBinding", f"{RELEASE}-rabbitmq-peer-discovery")
    sts_spec = r.get("StatefulSet", f"{RELEASE}-rabbitmq")["spec"]["template"]["spec"]
    assert binding["subjects"][0]["name"] == sts_spec["serviceAccountName"]


def test_rabbitmq_probes_follow_upstream(renders) -> None:
    container = renders["default"].main_container("StatefulSet", f"{RELEASE}-rabbitmq")
    assert container["livenessProbe"]["exec"]["command"] == ["rabbitmq-diagnostics", "-q", "ping"]
    # Readiness is the AMQP listener accepting connections: no CLI (an Erlang VM) started every period.
    assert container["readinessProbe"]["tcpSocket"] == {"port": "amqp"}
    assert "exec" not in container["readinessProbe"]
    assert container["livenessProbe"]["timeoutSeconds"] >= 10 and container["livenessProbe"]["periodSeconds"] >= 30


def test_rabbitmq_keeps_its_data_on_persistent_volumes(renders) -> None:
    (claim,) = renders["all-features"].get("StatefulSet", f"{RELEASE}-rabbitmq")["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    mounts = renders["default"].main_container("StatefulSet", f"{RELEASE}-rabbitmq")["volumeMounts"]
    assert {"name": "data", "mountPath": "/var/lib/rabbitmq/mnesia"} in mounts


def test_the_setup_container_writes_the_users_and_an_owner_only_cookie(renders, tmp_path) -> None:
    """The setup init container's script, run here with its directories moved under tmp_path."""
    r = renders["production"]
    config = rabbitmq_config(r)
    assert "default_pass" not in config["rabbitmq.conf"] and "default_user" not in config["rabbitmq.conf"]
    assert conf_lines(r)["load_definitions"] == "/etc/rabbitmq/definitions.json"
    for _ in range(2):  # a restarted init container runs it again
        dirs = run_setup(r, tmp_path)
    written = dirs["/etc/rabbitmq"] / "definitions.json"
    assert written.stat().st_mode & 0o777 == 0o600  # the passwords: the broker's user only
    imported = {u["name"]: u for u in json.loads(written.read_text())["users"]}
    assert imported.keys() == users(r).keys()
    assert imported["warren"]["password"] == decoded(r.get("Secret", f"{RELEASE}-rabbitmq"))["rabbitmq-password"]
    for user in set(imported) - {"warren"}:
        assert imported[user]["password"] == user_secret(r, user)["password"], user
    # The ConfigMap holds placeholders only; everything but the passwords is as rendered.
    assert {u["name"]: u["password"] for u in definitions(r)["users"]} == {
        user: "@@rabbitmq-password@@" if user == "warren" else f"@@{user}@@" for user in imported}
    assert json.loads(written.read_text())["permissions"] == definitions(r)["permissions"]
    cookie = dirs["/var/lib/rabbitmq"] / ".erlang.cookie"
    assert cookie.stat().st_mode & 0o777 == 0o400  # Erlang refuses a cookie others can read
    assert {p.name for p in dirs["/etc/rabbitmq"].iterdir()} == {
        "rabbitmq.conf", "enabled_plugins", "advanced.config", "definitions.json", "conf.d"}


@pytest.mark.parametrize(("problem", "message"), [
    ("missing", "no password for @@api@@"),
    ("quote", "must hold a password of letters and digits only"),
])
def test_the_setup_container_refuses_a_missing_or_unsafe_password(renders, tmp_path, problem: str,
                                                                   message: str) -> None:
    """A password goes into JSON as it is: one that is missing, or holds anything but letters and
    digits (usersExistingSecret is yours), stops the node before it boots with a broken user."""
    r = renders["all-features"]
    passwords = {user: f"pw{user.replace('-', '')}" for user in set(users(r)) - {"warren"}}
    run_setup(r, tmp_path / "ok", passwords=passwords)
    if problem == "missing":
        del passwords["api"]
    else:
        passwords["api"] = 'pass"word'
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_setup(r, tmp_path / problem, passwords=passwords)
    assert message in failed.value.stderr


# -- Conventions -------------------------------------------------------------------------------


def test_selectors_hold_only_stable_labels_and_match_their_pods(rendered: Render) -> None:
    allowed = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component", "warren/pool"}
    pod_labels = [o["spec"]["template"]["metadata"]["labels"]
                  for o in rendered.objects if o["kind"] in ("Deployment", "StatefulSet")]
    for o in rendered.objects:
        if o["kind"] in ("Deployment", "StatefulSet", "PodDisruptionBudget"):
            selector = o["spec"]["selector"]["matchLabels"]
        elif o["kind"] == "Service":
            selector = o["spec"]["selector"]
        else:
            continue
        assert set(selector) <= allowed and selector["app.kubernetes.io/instance"] == RELEASE, o["metadata"]["name"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), o["metadata"]["name"]


def test_config_changes_roll_the_pods(chart, renders) -> None:
    def checksums(r: Render) -> dict[str, str]:  # PostgreSQL has no configuration file: its pod spec is all
        return {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for o in r.objects if o["kind"] in ("Deployment", "StatefulSet")
                and o["metadata"]["name"] != f"{RELEASE}-postgresql"}

    before = checksums(renders["default"])
    warren_changed = checksums(render(chart, "default", {"warren": {"logLevel": "DEBUG"}}))
    rabbitmq_changed = checksums(render(chart, "default", {"rabbitmq": {"extraConfig": "heartbeat = 30"}}))
    for name in before:
        assert (warren_changed[name] != before[name]) == (name != f"{RELEASE}-rabbitmq"), name
        assert (rabbitmq_changed[name] != before[name]) == (name == f"{RELEASE}-rabbitmq"), name


def test_names_fit_kubernetes_limits_even_for_a_long_release(chart) -> None:
    release = "a-release-name-long-enough-to-be-truncated-everywhere"
    r = render(chart, "long", VALUE_SETS["three-node"], release=release)
    for o in r.objects:
        # A StatefulSet's pods are named <name>-<ordinal>, and must stay DNS labels.
        assert len(o["metadata"]["name"]) <= (52 if o["kind"] == "StatefulSet" else 63), o["metadata"]["name"]
    assert len({(o["kind"], o["metadata"]["name"]) for o in r.objects}) == len(r.objects)


def test_optional_features_are_off_by_default(renders) -> None:
    default, full = renders["default"], renders["all-features"]
    assert default.of_kind("Ingress") == [] and len(full.of_kind("Ingress")) == 1
    annotations = default.get("StatefulSet", f"{RELEASE}-rabbitmq")["spec"]["template"]["metadata"]["annotations"]
    assert "prometheus.io/scrape" not in annotations
    assert "WARREN_SHOP_FAILURE_RATE" not in default.configmap and "WARREN_SHOP_FAILURE_RATE" in full.configmap
    # NetworkPolicies are hardening, not a feature: on by default, ingress only.
    assert {p["metadata"]["name"] for p in default.of_kind("NetworkPolicy")} == {
        f"{RELEASE}-rabbitmq", f"{RELEASE}-postgresql", f"{RELEASE}-api", f"{RELEASE}-workers", f"{RELEASE}-test"}
    assert all(p["spec"]["policyTypes"] == ["Ingress"] for p in default.of_kind("NetworkPolicy"))


def test_network_policies_admit_only_what_each_role_needs(renders) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in renders["default"].of_kind("NetworkPolicy")}
    rules = {tuple(sorted(port["port"] for port in rule["ports"])): rule["from"]
             for rule in policies[f"{RELEASE}-rabbitmq"]["ingress"]}
    assert rules[(5672,)] == [{"podSelector": {}}]  # AMQP: this namespace only
    assert rules[(4369, 25672, 35672)][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "rabbitmq"
    assert (15672, 15692) not in rules  # management and metrics: only from networkPolicy.monitoringFrom
    assert "ingress" not in policies[f"{RELEASE}-workers"]  # workers accept nothing
    assert policies[f"{RELEASE}-api"]["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]


def test_helm_test_really_exercises_the_install(renders) -> None:
    r = renders["default"]
    pods = {p["metadata"]["name"]: p for p in r.of_kind("Pod")}
    assert all(p["metadata"]["annotations"]["helm.sh/hook"] == "test" for p in pods.values())
    broker = pods[f"{RELEASE}-test-broker"]["spec"]
    (sidecar,) = broker["initContainers"]
    assert sidecar["restartPolicy"] == "Always" and sidecar["command"] == ["warren", "worker", "selftest"]
    assert "startupProbe" in sidecar  # the request waits until the selftest worker consumes
    (request,) = broker["containers"]
    assert request["command"][:4] == ["warren", "request", "selftest", "noop"]
    assert env_of(request)["WARREN_NAMESPACE"] == env_of(sidecar)["WARREN_NAMESPACE"] == "warren-test"
    roles = {c["name"]: c for c in pods[f"{RELEASE}-test-roles"]["spec"]["containers"]}
    assert roles["inventory-check-stock"]["command"][:4] == ["warren", "request", "inventory", "check_stock"]
    assert f"http://{RELEASE}-api:8080/readyz" in roles["api-ready"]["command"][2]


# -- Values: schema and documentation ----------------------------------------------------------


BAD_VALUES = {
    "wrong type": ("rabbitmq:\n  replicas: three\n", ["/rabbitmq/replicas", "want integer"]),
    "unknown key": ("rabbitMQ:\n  replicas: 3\n", ["additional properties 'rabbitMQ' not allowed"]),
    "unknown pool key": ("pools:\n  payments:\n    enabled: true\n    maxTaskSecond: 5\n",
                         ["/pools/payments", "additional properties 'maxTaskSecond' not allowed"]),
    "zero prefetch": ("pools:\n  payments:\n    enabled: true\n    prefetch: 0\n",
                      ["/pools/payments/prefetch", "minimum"]),
    "two rabbitmq nodes": ("rabbitmq:\n  replicas: 2\n", ["/rabbitmq/replicas", "must be one of 1, 3, 5, 7"]),
    "credentials in values": ("warren:\n  extraEnv:\n    WARREN_BROKER_URL: amqp://u:p@h/\n",
                              ["invalid propertyName 'WARREN_BROKER_URL'"]),
    "no broker at all": ("rabbitmq:\n  enabled: false\n", ["/externalBroker/existingSecret", "minLength"]),
    "no database at all": ("database:\n  postgresql:\n    enabled: false\n",
                           ["/database/external/existingSecret", "minLength"]),
    "database credentials in values": ("warren:\n  extraEnv:\n    WARREN_SHOP_DATABASE_URL: postgresql://u:p@h/db\n",
                                       ["invalid propertyName 'WARREN_SHOP_DATABASE_URL'"]),
    "password in the management URL": ("operator:\n  management:\n    url: http://u:secret@h:15672\n",
                                       ["/operator/management/url"]),
    "autoscaling to no workers": ("pools:\n  payments:\n    enabled: true\n    autoscaling:\n      maxReplicas: 0\n",
                                  ["/pools/payments/autoscaling/maxReplicas", "minimum"]),
    "limits left out": ("api:\n  resources:\n    requests: {cpu: 1, memory: 1Gi}\n    limits: null\n",
                        ["/api/resources", "missing property 'limits'"]),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_values_file_is_rejected_naming_the_key(chart, tmp_path, case: str) -> None:
    text, expected = BAD_VALUES[case]
    path = tmp_path / "values.yaml"
    path.write_text(text)
    with pytest.raises(HelmValuesError) as raised:
        chart.render(values_from_yaml(path.read_text()), name=RELEASE, namespace="warren")
    for fragment in expected:
        assert fragment in str(raised.value)


def walk_schema(node: Any, path: str = "") -> Any:
    if isinstance(node, dict):
        yield path, node
        for key, child in node.items():
            yield from walk_schema(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from walk_schema(child, f"{path}/{i}")


def test_the_schema_closes_every_object_and_describes_every_property(chart) -> None:
    schema = chart.schema
    assert schema["additionalProperties"] is False
    for path, node in walk_schema(schema):
        conditional = {"if", "then"} & set(path.split("/"))  # a condition's fragments, not objects of their own
        if "properties" in node and not conditional:
            assert node.get("additionalProperties") is False, path
            for name, prop in node["properties"].items():
                assert prop.get("description"), f"{path}/properties/{name}"
        elif node.get("type") == "object" and path != "/properties/global":
            # a map (annotations, env, pools): its values have a schema of their own
            assert isinstance(node.get("additionalProperties"), dict), path


def test_values_yaml_documents_every_key_once(chart) -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    key = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):")
    keys = 0
    for i, line in enumerate(lines):
        if not (m := key.match(line)):
            continue
        keys += 1
        block, j = [], i - 1
        while j >= 0 and lines[j].strip().startswith("#") and lines[j].startswith(m.group(1) + "#"):
            block.insert(0, lines[j].strip())
            j -= 1
        assert block and block[0].startswith("# -- ") and sum(c.startswith("# --") for c in block) == 1, \
            f"values.yaml line {i + 1}: {line.strip()!r} needs one '# --' comment"
    assert keys > 60
    assert set(chart.values) == set(chart.schema["properties"]) - {"global"}


def test_the_production_profile_is_a_three_node_cluster_with_more_workers(renders) -> None:
    prod, default = renders["production"], renders["default"]
    assert prod.get("StatefulSet", f"{RELEASE}-rabbitmq")["spec"]["replicas"] == 3
    for pool in ("orders", "inventory"):
        assert (prod.get("Deployment", f"{RELEASE}-worker-{pool}")["spec"]["replicas"]
                > default.get("Deployment", f"{RELEASE}-worker-{pool}")["spec"]["replicas"])
    # The slow and bursty pools are scaled by the operator, payments never below 3 workers.
    autoscaled = {a["spec"]["targetRef"]["name"]: a["spec"] for a in prod.of_kind("WorkerAutoscaler")}
    assert set(autoscaled) == {f"{RELEASE}-worker-{pool}" for pool in ("payments", "shipping", "email")}
    assert autoscaled[f"{RELEASE}-worker-payments"]["minReplicas"] == 3
    assert autoscaled[f"{RELEASE}-worker-payments"]["target"] == {"drainSeconds": 30}
    memory = prod.get("StatefulSet", f"{RELEASE}-rabbitmq")["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert memory["limits"]["memory"] == memory["requests"]["memory"] == "4Gi"
    anti = prod.get("StatefulSet", f"{RELEASE}-rabbitmq")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in anti
