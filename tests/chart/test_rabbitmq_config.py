"""The chart's rabbitmq.conf and advanced.config, as rendered, booted by a real RabbitMQ.

RabbitMQ refuses to start on a rabbitmq.conf key it does not know, and an advanced.config it
cannot parse: rendering and schema checks see neither. So the production profile's files, as its
setup init container writes them (conftest's ``rabbitmq_node``) less only the Kubernetes
peer-discovery keys (no API server here), configure the test broker image in Docker, and the test
asks the running node what it made of them: the memory limit it counts on
(the container limit less headroom, not the host's RAM), the memory and disk alarm thresholds, the
target cluster size, and the quorum-queue settings.

The test image is Debian's RabbitMQ 3.10, which knows every rabbitmq.conf key the chart writes;
the continuous-membership-reconciliation settings (3.13 and later) are application settings in
advanced.config, which a 3.10 node holds without acting on them.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.chart.rabbitmq import Node
from tests.chart.rendering import RELEASE, Render
from tests.support.docker import docker
from warren.testing.broker import RABBIT_SETTINGS

pytestmark = pytest.mark.docker

GiB = 1024**3


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
def node(rabbitmq_node: Node) -> str:
    """The container of the test-image broker configured as a production pod (conftest)."""
    return rabbitmq_node.name


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


def test_a_dead_letter_no_queue_took_is_sent_again_after_ten_seconds(node: str) -> None:
    """Not RabbitMQ's 180 s: tests/integration/test_runtime_faults.py shows what it holds back."""
    assert evaluate(node, "application:get_env(rabbit, dead_letter_worker_publisher_confirm_timeout).") == (
        "{ok,10000}")
    assert f"{{ok,{RABBIT_SETTINGS['dead_letter_worker_publisher_confirm_timeout']}}}" == "{ok,10000}"


def test_the_cluster_size_reaches_peer_discovery_and_quorum_queues(node: str) -> None:
    formation = evaluate(node, "application:get_env(rabbit, cluster_formation).")
    assert "{target_cluster_size_hint,3}" in formation.replace(" ", "")
    for key, value in (("quorum_cluster_size", "3"), ("quorum_membership_reconciliation_enabled", "true"),
                       ("quorum_membership_reconciliation_target_group_size", "3"),
                       ("quorum_membership_reconciliation_auto_remove", "false")):
        assert evaluate(node, f"application:get_env(rabbit, {key}).") == f"{{ok,{value}}}", key
