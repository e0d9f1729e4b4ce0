"""On a real cluster (kind, `make e2e`): `helm install` the chart, every pod becomes ready, and
`helm test` proves a task goes through the deployed broker and workers, the operator scales a pool,
and `helm uninstall` finishes within a minute leaving no WorkerAutoscaler. Skipped where no cluster
can run (these machines); the chaos scenarios' Kubernetes adapter covers pods deleted mid-task."""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import pytest

from tests.chaos.kubernetes import cluster_problem, kubectl
from tests.support.docker import TAG

pytestmark = pytest.mark.kind
CHART = Path(__file__).resolve().parents[2] / "charts" / "warren"
# The operator scales the selftest pool: 10 tasks per worker, 1 to 4 workers, a 20 s window.
E2E_VALUES = Path(__file__).resolve().parent / "values-e2e.yaml"


@pytest.fixture(scope="module")
def release():
    if cluster_problem() is not None:
        pytest.skip("no Kubernetes cluster reachable; `make e2e` runs this on kind")
    namespace = f"warren-e2e-{secrets.token_hex(3)}"
    subprocess.run(
        ["helm", "install", "warren", str(CHART), "--namespace", namespace, "--create-namespace", "--wait",
         "--timeout", "10m", "--set", f"image.worker.tag={TAG}", "--set", f"image.api.tag={TAG}",
         "--set", f"image.operator.tag={TAG}", "--values", str(E2E_VALUES)],
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


def _jsonpath(namespace: str, kind: str, name: str, path: str) -> str:
    return kubectl("get", kind, name, "-o", f"jsonpath={path}", namespace=namespace).stdout.strip()


def _until(check, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(1)


def test_the_operator_scales_a_pool_up_with_its_backlog_and_back_down(release: str) -> None:
    deployment, autoscaler = "deployment/warren-worker-selftest", "workerautoscaler/warren-worker-selftest"
    assert _jsonpath(release, "deployment", "warren-worker-selftest", "{.spec.replicas}") == "1"
    # 40 tasks of 3 s: at 10 per worker the operator asks for 4 workers within a poll or two.
    kubectl("exec", deployment, "-c", "worker", "--", "warren", "publish", "selftest", "work", '{"ms": 3000}',
            "--count", "40", namespace=release)
    _until(lambda: _jsonpath(release, "deployment", "warren-worker-selftest", "{.spec.replicas}") == "4",
           timeout=30, what="the selftest pool scaled to 4 workers")
    reason = _jsonpath(release, "workerautoscaler", "warren-worker-selftest", "{.status.lastScaleReason}")
    assert "backlog" in reason, reason
    events = kubectl("get", "events", "--field-selector", "reason=Scaled", "-o", "name", namespace=release).stdout
    assert events.strip(), "the operator posts an Event for each scale"
    # Drained (30 s of work on 4 workers), then after the 20 s window back to 1.
    _until(lambda: _jsonpath(release, "deployment", "warren-worker-selftest", "{.spec.replicas}") == "1",
           timeout=180, what="the selftest pool back to 1 worker")
    assert _jsonpath(release, autoscaler.split("/")[0], "warren-worker-selftest",
                     '{.status.conditions[?(@.type=="BrokerReachable")].status}') == "True"


def test_helm_uninstall_finishes_within_a_minute_and_leaves_no_workerautoscaler(release: str) -> None:
    """Helm deletes the operator before the custom resources: were a finalizer left on a
    WorkerAutoscaler, nothing would remove it and the uninstall (and the namespace) would hang."""
    started = time.monotonic()
    done = subprocess.run(["helm", "uninstall", "warren", "--namespace", release, "--wait", "--timeout", "60s"],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 60
    left = kubectl("get", "workerautoscalers", "-o", "name", namespace=release).stdout.strip()
    assert left == "", f"left behind: {left}"
