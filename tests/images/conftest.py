"""Fixtures of the image tests: the Docker engine with every image `make images` builds, and
containers started on the host network and removed after each test."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from tests.support.docker import (
    API_IMAGE,
    OPERATOR_IMAGE,
    PYTHON_IMAGE,
    RABBITMQ_IMAGE,
    WORKER_IMAGE,
    Container,
    docker,
    docker_problem,
)

LABEL = "warren.test=images"


@pytest.fixture(scope="session")
def docker_engine() -> None:
    problem = docker_problem(PYTHON_IMAGE, WORKER_IMAGE, API_IMAGE, OPERATOR_IMAGE, RABBITMQ_IMAGE)
    if problem:
        pytest.fail(f"Docker or the images are not available ({problem}): run `make images` (it installs and "
                    "starts Docker if need be and builds the images), then run these tests again.", pytrace=False)


@pytest.fixture
def run(docker_engine: None) -> Iterator[Callable[..., Container]]:
    """Start a detached container on the host network; every one is removed after the test."""
    started: list[Container] = []

    def start(image: str, *args: str, env: dict[str, str] | None = None, options: tuple[str, ...] = ()) -> Container:
        container = Container(f"warren-test-{secrets.token_hex(4)}")
        env_args = [arg for key, value in (env or {}).items() for arg in ("--env", f"{key}={value}")]
        docker("run", "--detach", "--name", container.name, "--label", LABEL, "--network", "host",
               *options, *env_args, image, *args)
        started.append(container)
        return container

    yield start
    if started:
        docker("rm", "--force", "--volumes", *(c.name for c in started), check=False)
