"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against the real API
process and a real RabbitMQ. An operator signs in, opens a dead letter, replays it (a worker then
completes it), purges another, and replays the rest by reason.

``WARREN_DOCS_SCREENSHOT=1`` also writes the signed-in front page to docs/dashboard.png.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.database import fresh_sqlite_url
from tests.support.deadletters import dead_lettered, dlq, ids_in, wait_for_depth
from warren.testing.broker import LocalBroker
from warren.testing.ledger import Ledger
from warren.topology import Names
from warren_shop.local import LocalApi

pytestmark = pytest.mark.broker
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def playwright() -> Any:
    try:
        from playwright import sync_api
    except ImportError:  # never a skip: a browser test that does not run proves nothing
        pytest.fail("playwright is not installed: run `make deps` (the test dependency group)", pytrace=False)
    return sync_api


@pytest.fixture(scope="module")
def browser(playwright: Any) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: run `make deps` (scripts/install-deps.sh)", pytrace=False)
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def test_an_operator_replays_and_purges_dead_letters_from_the_dashboard(
    rig: Any, broker: LocalBroker, playwright: Any, browser: Any, tmp_path: Path
) -> None:
    oversized = dead_lettered(rig, 2)
    rig.worker("normal")
    refused = rig.producer.publish("selftest", "refuse", {"message": "card declined"})
    wait_for_depth(rig, dlq(rig), 3)
    token = secrets.token_urlsafe(24)
    (tmp_path / "token").write_text(token)
    api = LocalApi({**rig.env, "WARREN_API_ADMIN_TOKEN_FILE": str(tmp_path / "token"),
                    "WARREN_SHOP_DATABASE_URL": fresh_sqlite_url(tmp_path),
                    "WARREN_API_POOLS": '["selftest"]', "WARREN_API_MANAGEMENT_URL": broker.management_url},
                   tmp_path).wait_ready()
    expect = playwright.expect
    page = browser.new_page(viewport={"width": 1280, "height": 760})
    try:
        page.goto(f"{api.url}/dashboard")
        assert page.url.endswith("/dashboard/login")
        page.fill("#token", "wrong-token-wrong-token")
        page.click("#sign-in")
        expect(page.locator("main")).to_contain_text("Wrong token")
        page.goto(f"{api.url}/dashboard/login")
        page.fill("#token", token)
        page.click("#sign-in")

        expect(page.locator("#reasons")).to_contain_text("oversized_body")
        expect(page.locator("#dead-letters tr[data-id]")).to_have_count(3)
        expect(page.locator("#pools tr[data-pool=selftest]")).to_contain_text("selftest")
        expect(page.locator("#pools")).to_contain_text("From management API")
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        if os.environ.get("WARREN_DOCS_SCREENSHOT"):
            shutil.copy(tmp_path / "dashboard.png", DOCS / "dashboard.png")

        # Show one, then replay it from its page: a worker completes it.
        page.click(f"#dead-letters tr[data-id='{oversized[0]}'] a")
        expect(page.locator("#message")).to_contain_text("oversized_body")
        expect(page.locator("#body")).to_contain_text('"ms": 1')
        page.click("#message button.replay")
        expect(page.locator("#notice")).to_contain_text(f"replayed 1 dead letter(s): {oversized[0]}")
        expect(page.locator("#dead-letters tr[data-id]")).to_have_count(2)

        # Purge the refused one, after confirming.
        page.click(f"#dead-letters tr[data-id='{refused}'] a.purge")
        page.click("#confirm-purge")
        expect(page.locator("#notice")).to_contain_text(f"purged 1 dead letter(s): {refused}")

        # Replay what is left of a reason, all at once.
        page.click("#reasons button:has-text('Replay all 1')")
        expect(page.locator("#notice")).to_contain_text(f"replayed 1 dead letter(s): {oversized[1]}")
        expect(page.locator("#reasons")).to_contain_text("No dead letters")
    finally:
        page.close()
        api.stop()

    assert ids_in(rig, dlq(rig)) == []
    ledger = Ledger(rig.settings, completion_queue=Names(rig.settings.namespace).subscription("selftest-ledger"),
                    dead_letter_queues=())
    try:
        report = ledger.wait(oversized, timeout=30)
    finally:
        ledger.close()
    assert (report.completed, report.lost, report.duplicates) == (2, 0, 0)
