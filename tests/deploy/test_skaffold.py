"""skaffold.yaml: every image it builds exists as a Dockerfile, and every built image reaches the
chart through setValueTemplates, so `skaffold dev` deploys what it just built (the operator
included: it scales the payments pool)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helm_python import Chart

ROOT = Path(__file__).resolve().parents[2]
SKAFFOLD = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
RELEASE = SKAFFOLD["deploy"]["helm"]["releases"][0]


def _fill(template: str) -> str:
    """What skaffold substitutes: IMAGE_REPO_x -> a registry path, IMAGE_TAG_x -> a tag."""
    template = re.sub(
        r"\{\{\.IMAGE_REPO_(\w+)\}\}", lambda m: f"registry.test/{m.group(1).replace('_', '-')}", template
    )
    return re.sub(r"\{\{\.IMAGE_TAG_(\w+)\}\}", "built-by-skaffold", template)


def _set(values: dict, dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        values = values.setdefault(key, {})
    values[leaf] = value


@pytest.mark.parametrize("artifact", SKAFFOLD["build"]["artifacts"], ids=lambda a: a["image"])
def test_every_artifact_has_its_dockerfile_and_build_arguments(artifact) -> None:
    dockerfile = (ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]).read_text()
    for required in artifact.get("requires", []):
        assert re.search(rf"^ARG {required['alias']}\b", dockerfile, re.M), required
        assert required["image"] in {a["image"] for a in SKAFFOLD["build"]["artifacts"]}


def test_built_images_are_the_ones_the_chart_deploys() -> None:
    values: dict = {}
    for key, value in RELEASE.get("setValues", {}).items():
        _set(values, key, value)
    for key, template in RELEASE["setValueTemplates"].items():
        _set(values, key, _fill(template))
    chart = Chart.load(ROOT / RELEASE["chartPath"])
    rendered = "\n".join(chart.render(values, name="warren", namespace="warren").values())
    images = set(re.findall(r"image:\s*\"?([^\s\"]+)", rendered))
    warren = {i for i in images if "warren-" in i and "rabbitmq" not in i}
    assert warren == {f"registry.test/warren-{role}:built-by-skaffold" for role in ("worker", "api", "operator")}
    # Every image skaffold builds is deployed, or is the base of one that is.
    built = {a["image"] for a in SKAFFOLD["build"]["artifacts"]}
    bases = {r["image"] for a in SKAFFOLD["build"]["artifacts"] for r in a.get("requires", [])}
    assert {f"warren-{role}" for role in ("worker", "api", "operator")} == built - bases
    assert "kind: WorkerAutoscaler" in rendered, "skaffold dev shows the operator scaling a pool"


def test_the_production_like_profile_uses_the_production_values() -> None:
    [profile] = [p for p in SKAFFOLD["profiles"] if p["name"] == "production-like"]
    [patch] = profile["patches"]
    for path in patch["value"]:
        assert (ROOT / path).is_file(), path
