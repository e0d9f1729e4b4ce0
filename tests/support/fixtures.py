"""Fixtures for tests against the real broker: settings, worker processes, producer, ledger."""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator

import pytest

from tests.chaos.kubernetes import KubernetesPlatform, cluster_problem
from tests.chaos.platforms import DockerPlatform, Platform, ProcessPlatform, Worker
from tests.support.docker import RABBITMQ_IMAGE, WORKER_IMAGE, docker_problem
from warren import topology
from warren.broker import Session
from warren.config import settings_from_env
from warren.producer import Producer
from warren.testing.broker import LocalBroker
from warren.testing.ledger import Ledger, Report
from warren.topology import Names
from warren.worker.pool import load_pool

# Short delays keep retry tests quick; everything else is the production default.
FAST_RETRIES = {
    "WARREN_RETRY_INITIAL_DELAY_MS": "200",
    "WARREN_RETRY_MULTIPLIER": "2",
    "WARREN_RETRY_MAX_ATTEMPTS": "4",
    "WARREN_DELIVERY_LIMIT": "3",
    "WARREN_RECONNECT_INITIAL_DELAY": "0.2",
    "WARREN_RECONNECT_MAX_DELAY": "2",
}


class Rig:
    """One test's system: its env, settings, topology, workers, producer and ledger."""

    def __init__(self, platform: Platform, env: dict[str, str]) -> None:
        self.platform = platform
        self.env = {**FAST_RETRIES, **env, "WARREN_BROKER_URL": platform.broker_url}
        self.workers: list[Worker] = []
        self.reports: list[Report] = []
        self.configure()

    def configure(self, **overrides: str) -> None:
        self.env.update(overrides)
        self.settings = settings_from_env(self.env)
        self.ledger = Ledger.for_pool(self.settings)
        self.producer = Producer(self.settings, name="test-producer")

    def apply_topology(self, pool: str = "selftest") -> None:
        p = load_pool(pool)
        topo = topology.build(self.settings, pools=[p.spec])
        session = Session.open(self.settings, name="test-topology")
        try:
            topology.apply(session, topo)
        finally:
            session.close()

    def worker(
        self, name: str | None = None, *, pool: str = "selftest", ready: bool = True, restart: bool = False,
        **env: str,
    ) -> Worker:
        w = self.platform.start_worker({**self.env, **env}, name=name or f"w{len(self.workers) + 1}", pool=pool,
                                       restart=restart)
        self.workers.append(w)
        return w.wait_ready() if ready else w

    def scale(self, count: int, **env: str) -> list[Worker]:
        """Start workers, or stop the newest gracefully (SIGTERM, drain), until ``count`` are alive."""
        alive = [w for w in self.workers if w.alive()]
        for _ in range(count - len(alive)):
            alive.append(self.worker(**env))
        while len(alive) > count:
            victim = alive.pop()
            victim.signal(signal.SIGTERM)
            assert victim.wait(timeout=self.settings.shutdown_grace + 10) == 0
        return alive

    @property
    def work_queue(self) -> str:
        return Names(self.settings.namespace).queue("selftest")

    def busy_worker(self, ms: int, name: str | None = None) -> tuple[Worker, str]:
        """A selftest worker in the middle of a task of ``ms`` milliseconds, and that task's id."""
        self.apply_topology()
        worker = self.worker(name)
        task = self.producer.publish("selftest", "work", {"ms": ms})
        self.wait_until_taken(self.work_queue)
        return worker, task

    def queue_ready(self, queue: str) -> int:
        session = Session.open(self.settings, name="test-inspect")
        try:
            return session.queue_depth(queue)[0]
        finally:
            session.close()

    def wait_until_taken(self, queue: str, *, timeout: float = 20.0) -> None:
        """Poll until no message is ready in ``queue``: a worker holds them all."""
        deadline = time.monotonic() + timeout
        while self.queue_ready(queue):
            assert time.monotonic() < deadline, f"nothing took the messages in {queue} within {timeout}s"
            time.sleep(0.02)

    def account(self, ids: list[str], *, timeout: float, quiet_for: float = 0.5) -> Report:
        report = self.ledger.wait(ids, timeout=timeout, quiet_for=quiet_for)
        self.reports.append(report)
        return report

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.producer.close()
        self.ledger.close()


@pytest.fixture(scope="session")
def process_platform(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> ProcessPlatform:
    return ProcessPlatform(broker, tmp_path_factory.mktemp("workers"))


@pytest.fixture(scope="session")
def docker_platform() -> Iterator[DockerPlatform]:
    """Workers and the broker as containers, from the images `make images` builds."""
    problem = docker_problem(WORKER_IMAGE, RABBITMQ_IMAGE)
    if problem is not None:
        pytest.fail(f"Docker chaos needs a running engine and the images ({problem}): run `make images`",
                    pytrace=False)
    platform = DockerPlatform(worker_image=WORKER_IMAGE, rabbitmq_image=RABBITMQ_IMAGE,
                              prefix=f"warren-chaos-{secrets.token_hex(3)}")
    yield platform
    platform.close()


@pytest.fixture(scope="session")
def kubernetes_platform() -> Iterator[KubernetesPlatform]:
    """Workers as pods next to the chart's RabbitMQ, on the current cluster (kind, `make e2e`)."""
    problem = cluster_problem()
    if problem is not None:
        pytest.skip("no Kubernetes cluster reachable; `make e2e` runs this on kind")
    platform = KubernetesPlatform(namespace=f"warren-chaos-{secrets.token_hex(3)}", worker_image=WORKER_IMAGE)
    yield platform
    platform.close()


@pytest.fixture(params=[
    "process",
    pytest.param("docker", marks=pytest.mark.docker),
    pytest.param("kubernetes", marks=pytest.mark.kind),
])
def platform(request: pytest.FixtureRequest) -> Platform:
    """Each chaos scenario runs once per platform."""
    return request.getfixturevalue(f"{request.param}_platform")


def _rig(platform: Platform, namespace: str, request: pytest.FixtureRequest) -> Iterator[Rig]:
    r = Rig(platform, {"WARREN_NAMESPACE": namespace})
    yield r
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for w in r.workers:
            print(f"--- {w.name} log ---\n{w.log()[-4000:]}")
    r.close()
    for report in r.reports:
        record_report(request, report)


@pytest.fixture
def rig(process_platform: ProcessPlatform, namespace: str, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """A test's system with worker processes on this machine."""
    yield from _rig(process_platform, namespace, request)


@pytest.fixture
def chaos_rig(platform: Platform, namespace: str, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """A test's system on each platform in turn."""
    yield from _rig(platform, namespace, request)


LEDGER_KEY = pytest.StashKey[list[tuple[str, str]]]()


def record_report(request: pytest.FixtureRequest, report: Report | str) -> None:
    """List a ledger report (or another line of counts) in the run's closing "message ledger" section."""
    request.config.stash.setdefault(LEDGER_KEY, []).append((request.node.nodeid, str(report)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    rows = config.stash.get(LEDGER_KEY, [])
    if rows:
        terminalreporter.section("message ledger (every message accounted for)")
        for nodeid, line in rows:
            terminalreporter.write_line(f"{nodeid}: {line}")
