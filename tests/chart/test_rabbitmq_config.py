"""The chart's rabbitmq.conf and advanced.config, as rendered, booted by a real RabbitMQ.

RabbitMQ refuses to start on a rabbitmq.conf key it does not know, and an advanced.config it
cannot parse: rendering and schema checks see neither. So the production profile's files, less
only the Kubernetes peer-discovery keys (no API server here), configure the test broker image in
Docker, and the test asks the running node what it made of them: the memory limit it counts on
(the container limit less headroom, not the host's RAM), the memory and disk alarm thresholds, the
target cluster size, and the quorum-queue settings.

The test image is Debian's RabbitMQ 3.10, which knows every rabbitmq.conf key the chart writes;
the continuous-membership-reconciliation settings (3.13 and later) are application settings in
advanced.config, which a 3.10 node holds without acting on them.
"""

from __future__ import annotations

import re
import secrets
import subprocess

import pytest

from tests.chart.rendering import RELEASE, Render
from tests.support.docker import RABBITMQ_IMAGE, docker, docker_problem, eventually

pytestmark = pytest.mark.docker

PEER_DISCOVERY = re.compile(r"^cluster_formation\.(peer_discovery_backend|k8s\.)")
GiB = 1024**3


def chart_files(r: Render) -> dict[str, str]:
    """The RabbitMQ ConfigMap's files, without the keys that need a Kubernetes API server."""
    data = dict(r.get("ConfigMap", f"{RELEASE}-rabbitmq-config")["data"])
    data["rabbitmq.conf"] = "\n".join(line for line in data["rabbitmq.conf"].splitlines()
                                      if not PEER_DISCOVERY.match(line))
    return data


def conf_value(r: Render, key: str) -> str:
    (value,) = re.findall(rf"^{re.escape(key)} = (\S+)$", r.get("ConfigMap", f"{RELEASE}-rabbitmq-config")["data"][
        "rabbitmq.conf"], re.MULTILINE)
    return value


def test_memory_headroom_follows_the_cluster_operators_rule(chart) -> None:
    """A fifth of the limit for the Erlang VM, at most 2 GiB; the host's RAM never counts."""
    from tests.chart.rendering import render

    for limit, expected in (("1Gi", GiB - GiB // 5), ("4Gi", 4 * GiB - 4 * GiB // 5), ("16Gi", 14 * GiB),
                            ("1500M", 1_200_000_000), ("2.5Gi", 2 * GiB)):
        values = {"rabbitmq": {"resources": {"requests": {"cpu": "1", "memory": limit},
                                             "limits": {"cpu": "1", "memory": limit}}}}
        assert int(conf_value(render(chart, "memory", values), "total_memory_available_override_value")) == \
            expected, limit


@pytest.fixture(scope="module")
def node(renders, tmp_path_factory: pytest.TempPathFactory):
    """A test-image broker configured by the production profile's rendered files (/etc/rabbitmq)."""
    problem = docker_problem(RABBITMQ_IMAGE)
    if problem:
        pytest.fail(f"Docker or {RABBITMQ_IMAGE} is not available ({problem}): run `make images`.", pytrace=False)
    config = tmp_path_factory.mktemp("etc-rabbitmq")
    config.chmod(0o755)
    for name, text in chart_files(renders["production"]).items():
        (config / name).write_text(text)
        (config / name).chmod(0o644)
    name = f"warren-test-conf-{secrets.token_hex(4)}"
    docker("run", "--detach", "--name", name, "--label", "warren.test=chart",
           "--volume", f"{config}:/etc/rabbitmq:ro", RABBITMQ_IMAGE)
    try:
        eventually(lambda: _booted(name), timeout=90, what="RabbitMQ booted with the chart's configuration",
                   logs=lambda: _logs(name))
        yield name
    finally:
        docker("rm", "--force", name, check=False)


def _booted(name: str) -> bool:
    if docker("inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true":
        raise AssertionError(f"RabbitMQ refused the chart's configuration and stopped:\n{_logs(name)[-3000:]}")
    return docker("exec", name, "rabbitmq-diagnostics", "-q", "check_port_connectivity", check=False,
                  timeout=60).returncode == 0


def _logs(name: str) -> str:
    done = docker("logs", name, check=False)
    return done.stdout + done.stderr


def evaluate(node: str, expression: str) -> str:
    try:
        return docker("exec", node, "rabbitmqctl", "-q", "eval", expression, timeout=60).stdout.strip()
    except subprocess.TimeoutExpired as e:  # pragma: no cover - a hung CLI
        raise AssertionError(f"rabbitmqctl eval {expression!r} timed out") from e


def test_the_broker_counts_on_the_container_limit_less_headroom(node: str, renders) -> None:
    r = renders["production"]
    available = int(conf_value(r, "total_memory_available_override_value"))
    assert available == 4 * GiB - 4 * GiB // 5  # values-production.yaml: a 4Gi limit
    assert int(evaluate(node, "vm_memory_monitor:get_total_memory().")) == available
    # The alarm's threshold: 0.6 of what it may count on.
    assert int(evaluate(node, "vm_memory_monitor:get_memory_limit().")) == int(available * 0.6)


def test_the_disk_alarm_fires_with_room_left_on_the_volume(node: str, renders) -> None:
    assert int(evaluate(node, "rabbit_disk_monitor:get_disk_free_limit().")) == 2 * GiB
    assert int(conf_value(renders["production"], "disk_free_limit.absolute")) == 2 * GiB


def test_the_cluster_size_reaches_peer_discovery_and_quorum_queues(node: str) -> None:
    formation = evaluate(node, "application:get_env(rabbit, cluster_formation).")
    assert "{target_cluster_size_hint,3}" in formation.replace(" ", "")
    for key, value in (("quorum_cluster_size", "3"), ("quorum_membership_reconciliation_enabled", "true"),
                       ("quorum_membership_reconciliation_target_group_size", "3"),
                       ("quorum_membership_reconciliation_auto_remove", "false")):
        assert evaluate(node, f"application:get_env(rabbit, {key}).") == f"{{ok,{value}}}", key
