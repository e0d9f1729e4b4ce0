"""Fixtures: the chart loaded once, each value set rendered once (lazily: a render error fails only
that set's tests), and one checkov run over every set."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from helm_python import Chart

from tests.chart.rendering import CHART, VALUE_SETS, Render, render


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
