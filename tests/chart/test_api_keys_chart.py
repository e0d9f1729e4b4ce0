"""The API's keys and limits in the chart: a keys Secret generated once (kept by lookup, and an
upgrade that cannot read it fails), or an existing one; mounted as the file WARREN_API_KEYS_FILE
names, which the API accepts; the limits reach the API's settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from helm_python import HelmRenderError, HelmValuesError

from tests.chart.rabbitmq import decoded
from tests.chart.rendering import RELEASE, render
from tests.chart.test_chart import env_of
from warren.config import load
from warren_shop.api.auth import KeyRing
from warren_shop.settings import ApiSettings

API = f"{RELEASE}-api"


def test_the_chart_generates_one_key_with_the_client_scopes_and_keeps_it(chart, renders, tmp_path: Path) -> None:
    secret = renders["default"].get("Secret", f"{RELEASE}-api-keys")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # lookup keeps it on upgrades
    keys = decoded(secret)["keys"]
    name, scopes, key = keys.split()
    assert (name, scopes, len(key)) == ("client", "orders:write,orders:read,notifications:write,notifications:read", 40)
    (tmp_path / "keys").write_text(keys)
    found = KeyRing(tmp_path / "keys").find(key)  # the API reads what the chart wrote
    assert found is not None and not found.allows("admin")
    assert decoded(render(chart, "default", {}).get("Secret", f"{RELEASE}-api-keys"))["keys"] != keys  # random


def test_the_keys_are_a_mounted_file_and_the_limits_reach_the_api(renders) -> None:
    r = renders["default"]
    spec = r.pod("Deployment", API)
    api = r.main_container("Deployment", API)
    env = {**r.configmap, **env_of(api)}
    mount = {m["name"]: m for m in api["volumeMounts"]}["api-keys"]
    volume = {v["name"]: v for v in spec["volumes"]}["api-keys"]
    assert env["WARREN_API_KEYS_FILE"] == f"{mount['mountPath']}/keys" and mount["readOnly"] is True
    assert volume["secret"] == {"secretName": f"{RELEASE}-api-keys", "items": [{"key": "keys", "path": "keys"}],
                                "defaultMode": 0o440}
    settings = load(ApiSettings, **{k.removeprefix("WARREN_API_").lower(): v for k, v in env.items()
                                    if k.startswith("WARREN_API_") and k != "WARREN_API_KEYS_FILE"})
    assert (settings.max_body_bytes, settings.body_timeout, settings.header_timeout, settings.rate_limit,
            settings.rate_burst) == (65536, 10, 10, 20, 40)


def test_the_notes_show_a_call_with_the_key(renders) -> None:
    notes = renders["default"].notes
    assert (f"kubectl get secret --namespace {renders['default'].namespace} {RELEASE}-api-keys "
            "-o jsonpath='{.data.keys}'") in notes
    assert all('-H "Authorization: Bearer $KEY"' in line for line in notes.splitlines() if "curl" in line)


def test_an_existing_secret_replaces_the_generated_one(chart) -> None:
    r = render(chart, "default", {"api": {"auth": {"existingSecret": "shop-api-keys", "key": "api-keys"}}})
    assert "kubectl get secret --namespace warren-default shop-api-keys -o jsonpath='{.data.api-keys}'" in r.notes
    assert f"{RELEASE}-api-keys" not in {s["metadata"]["name"] for s in r.of_kind("Secret")}
    volume = {v["name"]: v for v in r.pod("Deployment", API)["volumes"]}["api-keys"]
    assert volume["secret"]["secretName"] == "shop-api-keys"
    assert volume["secret"]["items"] == [{"key": "api-keys", "path": "keys"}]


def test_an_upgrade_that_cannot_read_the_keys_fails_instead_of_replacing_them(chart) -> None:
    values = {"rabbitmq": {"auth": {"existingSecret": "rabbitmq-credentials", "usersExistingSecret": "rabbitmq-users"}}}
    with pytest.raises(HelmRenderError) as raised:
        chart.render(values, name=RELEASE, namespace="warren", is_upgrade=True, is_install=False)
    assert "api.auth.existingSecret" in str(raised.value) and f"Secret {RELEASE}-api-keys" in str(raised.value)
    upgraded = chart.render({**values, "api": {"auth": {"existingSecret": "shop-api-keys"}}},
                            name=RELEASE, namespace="warren", is_upgrade=True, is_install=False)
    assert "kind: Deployment" in upgraded[f"{RELEASE}/templates/api.yaml"]


@pytest.mark.parametrize("limits", [{"maxBodyBytes": 10}, {"rateLimit": 0}, {"bodyTimeout": "slow"}, {"other": 1}])
def test_the_schema_refuses_bad_limits(chart, limits: dict[str, object]) -> None:
    with pytest.raises((HelmRenderError, HelmValuesError)):
        render(chart, "default", {"api": {"limits": limits}})
