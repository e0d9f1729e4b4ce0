"""The Docker engine for tests: the client, the images `make images` builds, how containers run."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

from warren.testing.broker import free_ports
from warren.testing.cluster import DOCKER, docker

__all__ = ["DOCKER", "docker", "docker_problem", "eventually", "free_ports"]

TAG = os.environ.get("IMAGE_TAG") or "dev"
PYTHON_IMAGE, WORKER_IMAGE, API_IMAGE, OPERATOR_IMAGE = (
    f"warren-{role}:{TAG}" for role in ("python", "worker", "api", "operator"))
RABBITMQ_IMAGE = os.environ.get("RABBITMQ_IMAGE") or f"warren-rabbitmq:{TAG}"
# How the Helm chart runs Warren's containers.
HARDENED = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


def docker_problem(*images: str) -> str | None:
    """None if the engine answers and every image exists, else what is missing."""
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"docker: {e}"
    if info.returncode != 0:
        return info.stderr.strip() or "docker info failed"
    missing = [image for image in images if docker("image", "inspect", image, check=False).returncode]
    return f"images missing: {', '.join(missing)}" if missing else None


def eventually(check: Callable[[], bool], *, timeout: float, what: str, logs: Callable[[], str] = str) -> None:
    """Poll ``check`` until it holds; AssertionError naming ``what`` (and the end of ``logs()``) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{logs()[-3000:]}")
        time.sleep(0.1)


class Container:
    """A container started by name (tests/images' ``run`` fixture)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def logs(self) -> str:
        done = docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def inspect(self, template: str) -> str:
        return docker("inspect", "--format", template, self.name).stdout.strip()

    def has_file(self, path: str) -> bool:
        return docker("exec", self.name, "test", "-e", path, check=False).returncode == 0

    def stop(self, *, timeout: int = 10) -> tuple[int, float]:
        """`docker stop` (SIGTERM, then SIGKILL after ``timeout`` s): (exit status, seconds taken)."""
        started = time.monotonic()
        docker("stop", "--time", str(timeout), self.name, timeout=timeout + 60)
        return int(self.inspect("{{.State.ExitCode}}")), time.monotonic() - started
