"""The chart's database, specified: PostgreSQL as a StatefulSet of the official image (or one you
run), its password generated once or taken from your Secret, reachable only from this release's API
and workers; every role gets the database URL as a mounted Secret file and migrates the database
before it starts; no role keeps state in its pod."""

from __future__ import annotations

import base64
import os
import string
from typing import Any

from tests.chart.rendering import DIGEST, RELEASE, Render, render
from warren.config import load
from warren_shop.settings import ShopSettings

PG = f"{RELEASE}-postgresql"


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def role_pods(r: Render) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, pod spec) of the API and every worker Deployment."""
    return [(o, spec) for o, spec in r.pod_specs()
            if o["metadata"]["labels"]["app.kubernetes.io/component"] in ("api", "worker")]


def test_postgresql_is_a_statefulset_of_the_official_image_on_a_persistent_volume(renders) -> None:
    default, full = renders["default"], renders["all-features"]
    sts = default.get("StatefulSet", PG)
    assert sts["spec"]["replicas"] == 1 and sts["spec"]["serviceName"] == f"{PG}-headless"
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "postgres:17"
    assert full.main_container("StatefulSet", PG)["image"] == f"postgres@{DIGEST}"
    env = env_of(container)
    assert env["POSTGRES_PASSWORD_FILE"] == "/secrets/postgres-password" and "POSTGRES_PASSWORD" not in env
    assert (env["POSTGRES_USER"], env["POSTGRES_DB"]) == ("warren", "warren")
    assert env["PGDATA"].startswith("/var/lib/postgresql/data/")  # below the volume's root
    assert {"name": "data", "mountPath": "/var/lib/postgresql/data"} in container["volumeMounts"]
    (claim,) = full.get("StatefulSet", PG)["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert container["resources"] == default.values["database"]["postgresql"]["resources"]
    assert default.get("Service", PG)["spec"]["ports"] == [{"name": "postgresql", "port": 5432,
                                                            "targetPort": "postgresql"}]


def test_its_version_is_a_value(chart) -> None:
    r = render(chart, "pg16", {"database": {"postgresql": {"image": {"tag": "16.4"}}}})
    assert r.main_container("StatefulSet", PG)["image"] == "postgres:16.4"


def test_postgresql_is_probed_and_stops_fast_without_root(renders) -> None:
    spec = renders["default"].pod("StatefulSet", PG)
    (container,) = spec["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"][0] == "pg_isready", probe
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 300
    assert container["lifecycle"]["preStop"]["exec"]["command"][:4] == ["pg_ctl", "stop", "-m", "fast"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 999
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/var/lib/postgresql/data", "/var/run/postgresql", "/tmp"}
    assert spec["automountServiceAccountToken"] is False


def test_the_password_is_generated_once_kept_and_shared_by_the_roles_url(chart, renders) -> None:
    r = renders["default"]
    secret = r.get("Secret", PG)
    password = decoded(secret)["postgres-password"]
    assert len(password) == 32 and set(password) <= set(string.ascii_letters + string.digits)
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # lookup keeps it on upgrades
    url = decoded(r.get("Secret", f"{RELEASE}-database"))["url"]
    assert url == f"postgresql://warren:{password}@{PG}.{r.namespace}.svc.cluster.local:5432/warren"
    assert decoded(render(chart, "default", {}).get("Secret", PG))["postgres-password"] != password  # random


def test_an_existing_secret_gives_the_password_as_a_file_and_the_url_without_it(renders) -> None:
    r = renders["all-features"]
    assert [s for s in r.of_kind("Secret")] == []
    volumes = {v["name"]: v for v in r.pod("StatefulSet", PG)["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "shop-db-credentials"
    assert r.configmap["WARREN_SHOP_DATABASE_URL"] == f"postgresql://shop@{PG}.{r.namespace}.svc.cluster.local:5432/shop"
    api = r.pod("Deployment", f"{RELEASE}-api")
    assert env_of(api["containers"][0])["WARREN_SHOP_DATABASE_PASSWORD_FILE"] == "/etc/warren/database/password"
    assert next(v for v in api["volumes"] if v["name"] == "database")["secret"] == {
        "secretName": "shop-db-credentials", "items": [{"key": "postgres-password", "path": "password"}],
        "defaultMode": 0o440}


def test_an_external_database_comes_from_its_secret_and_none_is_deployed(renders) -> None:
    r = renders["external-database"]
    assert not [o for o in r.objects if "postgresql" in o["metadata"]["name"] or
                o["metadata"]["name"] == f"{RELEASE}-database"]
    for _o, spec in role_pods(r):
        (volume,) = [v for v in spec["volumes"] if v["name"] == "database"]
        assert volume["secret"]["secretName"] == "shop-database"
        assert volume["secret"]["items"] == [{"key": "dsn", "path": "url"}]
    assert "WARREN_SHOP_DATABASE_URL" not in r.configmap


def test_every_role_gets_the_database_url_as_a_mounted_secret_file(rendered: Render) -> None:
    pods = role_pods(rendered)
    assert len(pods) == 1 + len([p for p in rendered.values["pools"].values() if p["enabled"]])
    for o, spec in pods:
        containers = spec.get("initContainers", []) + spec["containers"]
        for c in containers:
            env = env_of(c)
            (setting,) = {"WARREN_SHOP_DATABASE_URL_FILE", "WARREN_SHOP_DATABASE_PASSWORD_FILE"} & env.keys()
            (mount,) = [m for m in c["volumeMounts"] if env[setting].startswith(m["mountPath"] + "/")]
            (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
            assert "secret" in volume and mount["readOnly"] is True, (o["metadata"]["name"], c["name"])


def test_each_role_migrates_the_database_before_it_starts(rendered: Render) -> None:
    for o, spec in role_pods(rendered):
        pool = o["metadata"]["labels"].get("warren/pool")
        own_pool = pool is not None and "target" in rendered.values["pools"][pool]  # not a shop pool
        first = spec.get("initContainers", [{}])[0]
        if own_pool:
            assert first.get("name") != "db-upgrade"
            continue
        assert first["name"] == "db-upgrade", o["metadata"]["name"]
        assert first["command"][:3] == ["warren-shop", "db", "upgrade"]
        assert first["image"] == spec["containers"][0]["image"]  # the role's own release of the schema


def test_no_role_keeps_state_in_its_pod(rendered: Render) -> None:
    assert "WARREN_SHOP_DATA_DIR" not in rendered.configmap
    for _o, spec in role_pods(rendered):
        scratch = [v for v in spec["volumes"] if "emptyDir" in v]
        assert [v["name"] for v in scratch] == ["tmp"]  # the worker's health file, the API's temp files
        assert all(v["emptyDir"]["sizeLimit"] in ("16Mi", "64Mi") for v in scratch)


def test_only_this_releases_api_and_workers_reach_postgresql(renders) -> None:
    r = renders["default"]
    policy = r.get("NetworkPolicy", PG)["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "postgresql"
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # this namespace only, and within it:
    selector = peer["podSelector"]

    def admitted(labels: dict[str, str]) -> bool:
        return (selector["matchLabels"].items() <= labels.items()
                and all(labels.get(e["key"]) in e["values"] for e in selector["matchExpressions"]))

    pods = {o["metadata"]["name"]: (o["spec"]["template"]["metadata"]["labels"] if o["kind"] != "Pod"
                                    else o["metadata"]["labels"]) for o, _spec in r.pod_specs()}
    reaching = {name for name, labels in pods.items() if admitted(labels)}
    assert reaching == {name for name, _ in ((o["metadata"]["name"], s) for o, s in role_pods(r))}
    assert selector["matchLabels"]["app.kubernetes.io/instance"] == RELEASE  # not another release's pods


def test_the_shop_settings_given_to_the_roles_are_valid(rendered: Render, monkeypatch) -> None:
    for _o, spec in role_pods(rendered):
        env = {**rendered.configmap, **env_of(spec["containers"][0])}
        with monkeypatch.context() as m:  # read as a role reads them: from its environment
            for name in [k for k in os.environ if k.startswith("WARREN_SHOP_")]:
                m.delenv(name)
            for name, value in env.items():
                if name.startswith("WARREN_SHOP_"):
                    m.setenv(name, value)
            load(ShopSettings, _env_file=None)  # raises ConfigError naming the setting
