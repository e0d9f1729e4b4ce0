"""The bundled RabbitMQ as the chart configures it, here without a cluster: its users and their
permissions (the rendered definitions), the Secrets that hold their passwords, and the StatefulSet's
setup init container, whose script is run on this machine with its directories moved into a
temporary one, reading the rendered ConfigMap and Secrets as the pod would mount them; and the
node of the test broker image that conftest's ``rabbitmq_node`` boots with what it writes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.chart.rendering import CHART, RELEASE, Render
from tests.support.docker import docker
from warren.worker.pool import Pool, load_pool

# The setup container's directories: the ConfigMap, the administrator's Secret, the users'
# passwords (a projected volume), and what it writes.
SETUP_DIRECTORIES = ("/config", "/secrets", "/users", "/etc/rabbitmq", "/var/lib/rabbitmq")


# The pools this checkout registers, by name (its pyproject.toml: the entry points installed in the
# environment may be another checkout's).
POOL_TARGETS: dict[str, str] = tomllib.loads((CHART.parents[1] / "pyproject.toml").read_text())[
    "project"]["entry-points"]["warren.pools"]


def chart_pool(r: Render, name: str) -> Pool:
    """The Pool a chart's pool runs: its ``target``, else the pool registered under its name (read
    from its role module: the shop's entry points check the database's schema first)."""
    spec = r.values["pools"][name]
    target = spec.get("target") or POOL_TARGETS[name]
    if target.startswith("warren_shop.workers:"):
        pool = target.split(":")[1]
        target = f"warren_shop.roles.{'notifications:' + pool if pool in ('email', 'sms') else pool + ':pool'}"
    return load_pool(target)


def decoded(secret: Mapping[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def rabbitmq_config(r: Render) -> dict[str, str]:
    """The RabbitMQ ConfigMap's files."""
    data: dict[str, str] = r.get("ConfigMap", f"{RELEASE}-rabbitmq-config")["data"]
    return data


def definitions(r: Render) -> dict[str, Any]:
    """The definitions the ConfigMap holds, password placeholders and all."""
    parsed: dict[str, Any] = json.loads(rabbitmq_config(r)["definitions.json"])
    return parsed


def users(r: Render) -> dict[str, dict[str, Any]]:
    """Each user of the definitions: its tags and its permissions on the vhost "/"."""
    spec = definitions(r)
    permissions = {p["user"]: p for p in spec["permissions"]}
    assert all(p["vhost"] == "/" for p in spec["permissions"])
    return {u["name"]: {"tags": u["tags"], **{k: permissions[u["name"]][k] for k in ("configure", "write", "read")}}
            for u in spec["users"]}


def user_secret(r: Render, user: str) -> dict[str, str]:
    """The generated Secret of a role's user, decoded."""
    return decoded(r.get("Secret", f"{RELEASE}-broker-{user}"))


def run_setup(r: Render, root: Path, *, passwords: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Run the setup init container's script under ``root``; its directories there, by path in the
    pod. The users' passwords are their generated Secrets' unless ``passwords`` gives them (as a
    usersExistingSecret would), and the administrator's the generated Secret's or a random one."""
    setup = r.pod("StatefulSet", f"{RELEASE}-rabbitmq")["initContainers"][0]
    assert setup["command"][:2] == ["sh", "-ec"]
    dirs = {d: root / d.strip("/").replace("/", "-") for d in SETUP_DIRECTORIES}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for name, text in rabbitmq_config(r).items():
        (dirs["/config"] / name).write_text(text)
    admin = [s for s in r.of_kind("Secret") if s["metadata"]["name"] == f"{RELEASE}-rabbitmq"]
    secrets = decoded(admin[0]) if admin else {"rabbitmq-password": "admin" + os.urandom(8).hex(),
                                               "rabbitmq-erlang-cookie": os.urandom(16).hex()}
    for name, text in secrets.items():
        (dirs["/secrets"] / name).write_text(text)
    roles = set(users(r)) - {r.values["rabbitmq"]["auth"]["username"]}
    given = dict(passwords) if passwords is not None else {user: user_secret(r, user)["password"] for user in roles}
    for user, password in given.items():
        (dirs["/users"] / user).write_text(password)
    script = setup["command"][2]
    for d in sorted(dirs, key=len, reverse=True):
        script = re.sub(rf"(?<![\w/]){re.escape(d)}(?=/)", str(dirs[d]), script)
    subprocess.run(["sh", "-ec", script], env={"PATH": os.environ["PATH"]}, check=True, capture_output=True,
                   text=True, timeout=60)
    return dirs


# The rabbitmq.conf keys that need a Kubernetes API server: left out in Docker.
PEER_DISCOVERY = re.compile(r"^cluster_formation\.(peer_discovery_backend|k8s\.)")


@dataclass(frozen=True)
class Node:
    """A test-image RabbitMQ node configured as the chart configures its pods."""

    name: str  # the container's
    host: str  # its address on the Docker bridge
    render: Render  # the value set it was configured by

    def url(self, user: str) -> str:
        """The AMQP URL of a role's user, from its rendered Secret, pointed at this node."""
        parts = urlsplit(user_secret(self.render, user)["url"])
        return urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@{self.host}:5672"))

    def logs(self) -> str:
        done = docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def rabbitmqctl(self, *args: str) -> str:
        return docker("exec", self.name, "rabbitmqctl", "-q", *args, timeout=60).stdout.strip()


def booted(node: Node) -> bool:
    if docker("inspect", "--format", "{{.State.Running}}", node.name).stdout.strip() != "true":
        raise AssertionError(f"RabbitMQ refused the chart's configuration and stopped:\n{node.logs()[-3000:]}")
    return docker("exec", node.name, "rabbitmq-diagnostics", "-q", "check_port_connectivity", check=False,
                  timeout=60).returncode == 0
