"""What the Python images hold: exactly the distributions uv.lock pins for their extra (the images
install from the lock file, images/python/Dockerfile), no build tools, and their entrypoints.

Expected contents are computed from uv.lock itself: the lock's dependency graph is walked from the
project's own dependencies and its extra, evaluating each edge's environment marker in the image's
environment (its Python, platform and architecture), as an installer does.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.support.docker import API_IMAGE, OPERATOR_IMAGE, PYTHON_IMAGE, WORKER_IMAGE, docker

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "warren"

# Run in an image: its PEP 508 marker environment and every distribution installed in /opt/venv.
PROBE = """
import importlib.metadata, json, os, platform, sys
v = sys.implementation.version
implementation_version = f"{v.major}.{v.minor}.{v.micro}"
if v.releaselevel != "final":
    implementation_version += v.releaselevel[0] + str(v.serial)
environment = {
    "implementation_name": sys.implementation.name,
    "implementation_version": implementation_version,
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
installed = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}
print(json.dumps({"environment": environment, "installed": installed, "uv_left": os.path.exists("/opt/uv")}))
"""


def normalize(name: str) -> str:
    """PEP 503: the lock writes ``pydantic-core``, the installed metadata ``pydantic_core``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_closure(lock: dict[str, Any], extras: list[str], environment: dict[str, str]) -> dict[str, str]:
    """{name: version} that installing the project with ``extras`` from ``lock`` gives in ``environment``
    (the project itself and the dev dependency groups excluded)."""
    from packaging.markers import Marker

    by_name: dict[str, list[dict[str, Any]]] = {}
    for package in lock["package"]:
        by_name.setdefault(package["name"], []).append(package)
    (project,) = by_name[PROJECT]
    marker_environment = {**environment, "extra": ""}

    def applies(edge: dict[str, Any]) -> bool:
        return "marker" not in edge or Marker(edge["marker"]).evaluate(marker_environment)

    def target(edge: dict[str, Any]) -> dict[str, Any]:
        candidates = by_name[edge["name"]]
        if len(candidates) > 1:  # the lock forks: the edge names the version it means
            candidates = [p for p in candidates if p["version"] == edge.get("version")]
        assert len(candidates) == 1, f"uv.lock: cannot tell which {edge['name']} {edge} means"
        return candidates[0]

    pending = [*project.get("dependencies", [])]
    for extra in extras:
        assert extra in project.get("optional-dependencies", {}), f"uv.lock has no extra {extra!r}: run `make lock`"
        pending += project["optional-dependencies"][extra]
    wanted: dict[str, str] = {}
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    while pending:
        edge = pending.pop()
        if not applies(edge):
            continue
        package = target(edge)
        key = (package["name"], package["version"], tuple(edge.get("extra", ())))
        if key in seen:
            continue
        seen.add(key)
        wanted[normalize(package["name"])] = package["version"]
        pending += package.get("dependencies", [])
        for extra in edge.get("extra", ()):
            pending += package.get("optional-dependencies", {}).get(extra, [])
    return wanted


@pytest.mark.docker
@pytest.mark.parametrize(("image", "extra"), [(PYTHON_IMAGE, "shop"), (OPERATOR_IMAGE, "operator")])
def test_python_image_holds_exactly_what_uv_lock_pins_for_its_extra(
    docker_engine: None, image: str, extra: str
) -> None:
    probe = json.loads(docker("run", "--rm", "--entrypoint", "python", image, "-c", PROBE).stdout)
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    expected = locked_closure(lock, [extra], probe["environment"])
    installed = {normalize(name): version for name, version in probe["installed"].items()}
    assert installed.pop(PROJECT, None) is not None, f"{image}: the warren distribution is not installed"
    # Nothing more (no pip, setuptools or uv; no test tool), nothing less, and every version the lock's.
    assert installed == expected, (
        f"{image} differs from uv.lock (extra {extra!r}): rebuild the images (`make images`)\n"
        f"  only in the image: {sorted(set(installed.items()) - set(expected.items()))}\n"
        f"  only in the lock:  {sorted(set(expected.items()) - set(installed.items()))}"
    )
    assert not probe["uv_left"], f"{image}: /opt/uv (the build stage's uv) reached the final image"


def test_the_lock_walk_finds_the_extras_own_dependencies() -> None:
    # A guard on the walk above: an extra's direct dependencies are in its closure, another's are not.
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    linux = {
        "implementation_name": "cpython",
        "implementation_version": "3.11.7",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": "3.11.7",
        "platform_python_implementation": "CPython",
        "python_version": "3.11",
        "sys_platform": "linux",
    }
    shop, operator = locked_closure(lock, ["shop"], linux), locked_closure(lock, ["operator"], linux)
    assert {"pika", "pydantic", "fastapi", "uvicorn"} <= set(shop) and "kopf" not in shop
    assert {"pika", "pydantic", "kopf", "kubernetes", "prometheus-client"} <= set(operator)
    assert "fastapi" not in operator
    assert not {"pytest", "ruff", "celery"} & (set(shop) | set(operator)), "a dev dependency group leaked in"


def test_images_and_install_deps_use_the_same_uv() -> None:
    dockerfile = (ROOT / "images" / "python" / "Dockerfile").read_text()
    install_deps = (ROOT / "scripts" / "install-deps.sh").read_text()
    in_image = re.search(r"^ARG UV_VERSION=(\S+)$", dockerfile, re.M)
    on_hosts = re.search(r"^UV_VERSION=(\S+)$", install_deps, re.M)
    assert in_image and on_hosts, "UV_VERSION not found in images/python/Dockerfile or scripts/install-deps.sh"
    assert in_image[1] == on_hosts[1], (
        f"uv {in_image[1]} in images/python/Dockerfile but {on_hosts[1]} in scripts/install-deps.sh"
    )


@pytest.mark.docker
@pytest.mark.parametrize(
    ("image", "entrypoint"),
    [
        (WORKER_IMAGE, ["warren", "worker"]),
        (API_IMAGE, ["warren-shop", "api"]),
        (OPERATOR_IMAGE, ["warren-operator"]),
    ],
)
def test_image_entrypoint(docker_engine: None, image: str, entrypoint: list[str]) -> None:
    # What `docker run IMAGE` runs (the chart names the same commands): each is a script of /opt/venv.
    assert json.loads(docker("image", "inspect", "--format", "{{json .Config.Entrypoint}}", image).stdout) == entrypoint
    done = docker("run", "--rm", "--entrypoint", "sh", image, "-c", f"command -v {entrypoint[0]}", check=False)
    assert done.returncode == 0 and done.stdout.strip() == f"/opt/venv/bin/{entrypoint[0]}", done.stdout + done.stderr
