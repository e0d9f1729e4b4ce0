"""`make dev`, `make deploy` and `make e2e` check the versions of kind, Helm and skaffold before
using them (scripts/check-tools.sh), and the kind cluster they create has room for the
production-like profile: one Kubernetes node per RabbitMQ node under hard anti-affinity."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "scripts" / "check-tools.sh"
MAKEFILE = (ROOT / "Makefile").read_text()
VERSIONS = {"HELM_VERSION": "3.14.0", "SKAFFOLD_VERSION": "2.16.0", "KIND_VERSION": "0.23.0"}


def fake_tools(directory: Path, **versions: str) -> dict[str, str]:
    """Executables answering `helm version --template ...`, `skaffold version`, `kind version`."""
    replies = {"helm": "{helm}", "skaffold": "{skaffold}", "kind": "kind {kind} go1.22.5 linux/amd64"}
    for tool, version in versions.items():
        script = directory / tool
        script.write_text(f"#!/bin/sh\necho '{replies[tool].format(**{tool: version})}'\n")
        script.chmod(0o755)
    return {**os.environ, **VERSIONS, "PATH": f"{directory}:/usr/bin:/bin"}


@pytest.mark.parametrize(("tool", "version", "passes"), [
    ("helm", "v3.16.2", True),
    ("helm", "v4.0.0", True),
    ("helm", "v3.9.4", False),
    ("skaffold", "v2.16.1", True),
    ("skaffold", "v2.13.2", False),  # reads no skaffold/v4beta13
    ("kind", "v0.27.0", True),
    ("kind", "v0.17.0", False),
])
def test_tool_versions_are_checked(tmp_path: Path, tool: str, version: str, passes: bool) -> None:
    env = fake_tools(tmp_path, **{tool: version})
    done = subprocess.run(["bash", str(CHECK), tool], env=env, capture_output=True, text=True, check=False)
    assert (done.returncode == 0) is passes, done.stderr
    if not passes:
        assert done.returncode == 2 and f"{tool} {version.lstrip('v')} is too old" in done.stderr


def test_a_missing_tool_is_named(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(CHECK), "skaffold"], env=fake_tools(tmp_path), capture_output=True,
                          text=True, check=False)
    assert done.returncode == 2 and "skaffold is not installed" in done.stderr


def test_the_makefile_pins_what_the_check_reads() -> None:
    for name, version in VERSIONS.items():
        assert re.search(rf"^{name} \?= {re.escape(version)}$", MAKEFILE, re.M), name
    for target, tools in (("kind-cluster", "kind"), ("dev", "helm skaffold"), ("deploy", "helm"), ("e2e", "helm")):
        recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", MAKEFILE, re.M)
        assert recipe and f"scripts/check-tools.sh {tools}" in recipe.group(1), target


def test_the_kind_cluster_fits_the_production_like_profile() -> None:
    kind = yaml.safe_load((ROOT / "deploy" / "kind.yaml").read_text())
    production = yaml.safe_load((ROOT / "charts" / "warren" / "values-production.yaml").read_text())
    workers = [node for node in kind["nodes"] if node["role"] == "worker"]
    assert production["rabbitmq"]["podAntiAffinity"] == "hard"
    assert len(workers) >= production["rabbitmq"]["replicas"]
    assert "--config deploy/kind.yaml" in MAKEFILE
