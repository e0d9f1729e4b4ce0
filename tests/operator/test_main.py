"""``python -m warren_operator``, the process the operator's image runs, as a real subprocess.

Bad settings stop it at once with one readable line and status 2. Good ones run kopf against
kmock's emulator (through a kubeconfig): its liveness endpoint answers on the health port, the
Prometheus metrics on the metrics port, it watches only its namespace, and SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import kmock
import pytest

from tests.operator.emulator import Emulator, kubeconfig, operator_requests, register_core, register_crd
from tests.operator.test_operator_kmock import CRD_FILE, NS
from tests.support.docker import free_ports

WORKER_AUTOSCALERS = kmock.resource("warren.dev", "v1alpha1", "workerautoscalers")
STARTS_WITHIN = 30.0  # s: importing kopf and the kubernetes client takes a few seconds on a slow machine


def _env(**settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("WARREN_OPERATOR_", "KUBERNETES_SERVICE_"))}  # never in-cluster
    return env | settings


@pytest.mark.parametrize(("variable", "value"), [
    ("WARREN_OPERATOR_METRICS_PORT", "notaport"),
    ("WARREN_OPERATOR_HEALTH_PORT", "0"),  # the liveness probe needs a port
    ("WARREN_OPERATOR_NAMESPACE", "Shop_Floor"),  # not a namespace name
    ("WARREN_OPERATOR_LOG_LEVEL", "chatty"),
])
def test_a_bad_setting_exits_2_with_one_line_naming_it(variable: str, value: str) -> None:
    result = subprocess.run([sys.executable, "-m", "warren_operator"], env=_env(**{variable: value}),
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"warren-operator: invalid setting {variable}: ")
    assert f"(got {value!r})".lower() in lines[0].lower()  # the log level is read case-blind


def test_serves_health_and_metrics_watches_its_namespace_and_stops_on_sigterm(tmp_path: Path) -> None:
    asyncio.run(_run_the_process(tmp_path))


async def _run_the_process(tmp_path: Path) -> None:
    async with Emulator() as emulator, kmock.Server(emulator):
        register_core(emulator)
        register_crd(emulator, CRD_FILE)
        health, metrics = free_ports(2)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "warren_operator", stderr=asyncio.subprocess.PIPE, env=_env(
                KUBECONFIG=str(kubeconfig(emulator, tmp_path / "kubeconfig")), WARREN_OPERATOR_NAMESPACE=NS,
                WARREN_OPERATOR_HEALTH_PORT=str(health), WARREN_OPERATOR_METRICS_PORT=str(metrics)))
        try:
            assert await _answer(f"http://127.0.0.1:{health}/healthz", process) == 200
            assert "# TYPE warren_autoscaler_poll_duration_seconds histogram" in await asyncio.to_thread(
                _text, f"http://127.0.0.1:{metrics}/metrics")
            await _eventually_watched(emulator)
            watches = [r for r in operator_requests(emulator) if r.action == kmock.action.WATCH]
            assert all(r.namespace == NS for r in watches), [str(r.url) for r in watches]

            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr, stderr.decode()


async def _eventually_watched(emulator: Emulator) -> None:
    """Until kopf watches the WorkerAutoscalers: it does once ``handlers`` registered its handlers."""
    deadline = time.monotonic() + STARTS_WITHIN
    while not any(r.action == kmock.action.WATCH and r.resource == WORKER_AUTOSCALERS
                  for r in operator_requests(emulator)):
        assert time.monotonic() < deadline, "no watch of WorkerAutoscalers"
        await asyncio.sleep(0.2)


async def _answer(url: str, process: asyncio.subprocess.Process) -> int:
    """The status of the first answer from ``url``, polled until the process serves it."""
    deadline = time.monotonic() + STARTS_WITHIN
    while True:
        assert process.returncode is None, "the operator exited"
        try:
            return await asyncio.to_thread(_status, url)
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, f"nothing answered at {url} within {STARTS_WITHIN:g} s"
            await asyncio.sleep(0.2)


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()
