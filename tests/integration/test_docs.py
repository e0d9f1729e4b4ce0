"""Every Python example in the README and in docs/ runs, against a real broker.

The blocks of one page run in order, in one namespace, as a reader would paste them. Before a
block that publishes, the topology of every pool defined so far is applied, as the pool's workers
would apply it when they start (a publish to a pool with no queue is refused, not lost).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from warren import Pool, topology
from warren.broker import Session
from warren.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "CONTRIBUTING.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text()) if page.exists() else []


EXAMPLES = [page for page in PAGES if python_blocks(page)]


def test_the_readme_has_an_example_to_run() -> None:
    assert python_blocks(ROOT / "README.md")


@pytest.mark.broker
@pytest.mark.parametrize("page", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_python_examples_of_a_page_run(page: Path, broker_env: dict[str, str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in broker_env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    scope: dict[str, object] = {"__name__": f"docs_example_{page.stem}"}
    for n, block in enumerate(python_blocks(page), start=1):
        pools = [v for v in scope.values() if isinstance(v, Pool)]
        if pools and "Producer" in block:
            session = Session.open(settings, name="docs-example")
            try:
                topology.apply(session, topology.build(settings, pools=[p.spec for p in pools]))
            finally:
                session.close()
        exec(compile(block, f"{page.name}:python-block-{n}", "exec"), scope)
