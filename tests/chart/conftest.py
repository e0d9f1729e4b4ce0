"""Fixtures: the chart loaded once, each value set rendered once (lazily: a render error fails only
that set's tests), one checkov run over every set, and one RabbitMQ node booted in Docker as the
production profile configures it (tests marked docker)."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from helm_python import Chart

from tests.chart.rabbitmq import PEER_DISCOVERY, Node, booted, run_setup
from tests.chart.rendering import CHART, VALUE_SETS, Render, render
from tests.support.docker import RABBITMQ_IMAGE, docker, docker_problem, eventually


@pytest.fixture(scope="session")
def chart() -> Iterator[Chart]:
    with Chart.load(CHART) as loaded:
        yield loaded


class Renders(dict[str, Render]):
    """Every value set, rendered the first time a test asks for it."""

    def __init__(self, chart: Chart) -> None:
        super().__init__()
        self.chart = chart

    def __missing__(self, name: str) -> Render:
        self[name] = rendered = render(self.chart, name, VALUE_SETS[name])
        return rendered


@pytest.fixture(scope="session")
def renders(chart: Chart) -> Renders:
    return Renders(chart)


@pytest.fixture(params=list(VALUE_SETS))
def rendered(request: pytest.FixtureRequest, renders: Renders) -> Render:
    """Each value set in turn."""
    return renders[request.param]


@pytest.fixture(scope="session")
def checkov_report(renders: Renders, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """checkov's kubernetes checks over every value set's manifests, in one run (it takes seconds to
    start): one file per set. Its JSON report."""
    directory = tmp_path_factory.mktemp("manifests")
    for name in VALUE_SETS:
        (directory / f"{name}.yaml").write_text(yaml.safe_dump_all(renders[name].objects))
    result = subprocess.run(
        ["checkov", "--directory", str(directory), "--framework", "kubernetes", "--output", "json",
         "--compact", "--skip-download"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.stdout.strip(), f"checkov printed no report (status {result.returncode}): {result.stderr[-2000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    (kubernetes,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    assert kubernetes["summary"]["parsing_errors"] == 0, result.stdout[-2000:]
    return kubernetes


@pytest.fixture(scope="session")
def rabbitmq_node(renders: Renders, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The test broker image configured as a production pod is: /etc/rabbitmq as its setup init
    container writes it (run here, from the rendered ConfigMap and Secrets: the users' definitions
    with their passwords), less only the Kubernetes peer-discovery keys."""
    problem = docker_problem(RABBITMQ_IMAGE)
    if problem:
        pytest.fail(f"Docker or {RABBITMQ_IMAGE} is not available ({problem}): run `make images`.", pytrace=False)
    r = renders["production"]
    etc = run_setup(r, tmp_path_factory.mktemp("rabbitmq-pod"))["/etc/rabbitmq"]
    conf = etc / "rabbitmq.conf"
    conf.write_text("\n".join(line for line in conf.read_text().splitlines() if not PEER_DISCOVERY.match(line)))
    # In the pod the setup container runs as the broker's user and writes owner-only files; here
    # root wrote them, and the image's rabbitmq user reads them through a read-only mount.
    etc.chmod(0o755)
    for path in etc.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    name = f"warren-test-conf-{secrets.token_hex(4)}"
    docker("run", "--detach", "--name", name, "--label", "warren.test=chart",
           "--volume", f"{etc}:/etc/rabbitmq:ro", RABBITMQ_IMAGE)
    try:
        host = docker("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                      name).stdout.strip()
        node = Node(name, host, r)
        eventually(lambda: booted(node), timeout=90, what="RabbitMQ booted with the chart's configuration",
                   logs=node.logs)
        yield node
    finally:
        docker("rm", "--force", name, check=False)
