"""`make demo`, the README's main job, runs to its summary table and exits 0; the table is built
from the store, read back through the API."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from warren.testing.processes import child_python_path

pytestmark = pytest.mark.broker


def test_the_shop_demo_accounts_for_every_order(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}  # its own private broker
    env["PYTHONPATH"] = child_python_path({})  # this checkout's code, whatever is installed
    done = subprocess.run([sys.executable, "-m", "warren_shop", "demo"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stderr[-3000:]
    # One order of each final status, as GET /api/v1/orders/ID answered, before the table.
    assert re.search(r"GET /api/v1/orders/\w+: accepted -> reserved -> paid -> (shipped -> emailed|emailed -> shipped)"
                     r" -> completed; by \d+ processes", done.stdout)
    assert re.search(r"GET /api/v1/orders/\w+: accepted -> reserved -> failed \(payment_declined\)", done.stdout)
    # A payments worker's metrics port, scraped before the burst and after it: its counter moved.
    scraped = re.search(r'curl http://127\.0\.0\.1:\d+/metrics \(payments\d\): '
                        r'warren_tasks_total\{outcome="completed"\} (\d+) -> (\d+)', done.stdout)
    assert scraped and int(scraped[1]) == 0 < int(scraped[2]), done.stdout[-3000:]
    table = done.stdout[done.stdout.index("orders sent to the API"):]
    assert "every order accounted for" in table
    assert "final status, read back from the store (GET /api/v1/orders/ID)" in table
    lines = {line.rsplit(None, 1)[0].strip(): int(line.rsplit(None, 1)[1]) for line in table.splitlines()
             if line.strip() and line.rsplit(None, 1)[-1].isdigit()}
    assert lines["lost"] == 0 and lines["orders charged twice"] == 0
    assert lines["rejected: 409 out of stock"] == 2 and lines["rejected: 422 invalid"] == 1
    assert lines["dead-lettered: schema_violation"] == 1
    assert lines["failed: payment_declined"] == 4
    assert lines["completed (paid, shipped, e-mailed)"] + 4 + 1 == lines["orders to account for"]
    # The payment gateway's outage: its orders found in the payments DLQ with `warren dlq`, one
    # shown, one replayed by the command and one through the operations API, both to completion.
    assert lines["orders dead-lettered: retries_exhausted"] == 2
    assert lines["replayed with warren dlq replay"] == lines["replayed through the operations API"] == 1
    assert lines["completed after their replay"] == 2
    assert lines["payments charged"] == lines["completed (paid, shipped, e-mailed)"] + 2
    listed = done.stdout[done.stdout.index("$ warren dlq list --pool payments"):]
    assert re.search(r"payments +2 +retries_exhausted 2", listed)
    assert "error_message      simulated payments outage" in listed  # warren dlq show
    assert re.search(r"replayed 1 dead letter\(s\) \(payments 1\)", listed)
    assert "POST /api/v1/admin/dlq/replay" in listed and "HTTP 200, replayed 1" in listed
