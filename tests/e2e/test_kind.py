"""On a real cluster (kind, `make e2e`): `helm install` the chart, every pod becomes ready, and
`helm test` proves a task goes through the deployed broker and workers. Skipped where no cluster
can run (these machines); the chaos scenarios' Kubernetes adapter covers pods deleted mid-task."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from tests.chaos.kubernetes import cluster_problem, kubectl
from tests.support.docker import TAG

pytestmark = pytest.mark.kind
CHART = Path(__file__).resolve().parents[2] / "charts" / "warren"


@pytest.fixture(scope="module")
def release():
    if cluster_problem() is not None:
        pytest.skip("no Kubernetes cluster reachable; `make e2e` runs this on kind")
    namespace = f"warren-e2e-{secrets.token_hex(3)}"
    subprocess.run(
        ["helm", "install", "warren", str(CHART), "--namespace", namespace, "--create-namespace", "--wait",
         "--timeout", "10m", "--set", f"image.worker.tag={TAG}", "--set", f"image.api.tag={TAG}"],
        check=True, timeout=700,
    )
    yield namespace
    subprocess.run(["helm", "uninstall", "warren", "--namespace", namespace], check=False, timeout=300)
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_every_pod_of_the_install_is_ready(release: str) -> None:
    kubectl("wait", "--for=condition=Ready", "pod", "--all", "--timeout=300s", namespace=release, timeout=320)


def test_helm_test_passes_against_the_install(release: str) -> None:
    done = subprocess.run(["helm", "test", "warren", "--namespace", release, "--logs", "--timeout", "5m"],
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
