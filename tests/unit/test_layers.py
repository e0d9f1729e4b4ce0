"""The layers point one way: the runtime names no workload, no test helper and no operator; the
test helpers name no workload; pika stays behind the broker boundary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "src" / "warren"
TESTING = RUNTIME / "testing"
SHOP = ROOT / "src" / "warren_shop"
OPERATOR = ROOT / "operator" / "warren_operator"

# package directory -> module prefixes it must never import
FORBIDDEN = {
    "runtime": ("warren.testing", "warren_shop", "warren_operator", "tests", "bench"),
    "testing": ("warren_shop", "warren_operator", "tests", "bench"),
    "shop": ("warren_operator", "tests", "bench"),
    "operator": ("warren_shop", "warren.testing", "tests", "bench"),
}


def _modules(layer: str) -> list[Path]:
    if layer == "runtime":
        return [p for p in RUNTIME.rglob("*.py") if TESTING not in p.parents]
    return sorted({"testing": TESTING, "shop": SHOP, "operator": OPERATOR}[layer].rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-local imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _violations(layer: str) -> list[str]:
    found = []
    for path in _modules(layer):
        for name in sorted(imported_modules(path)):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[layer]):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(layer: str) -> None:
    assert _modules(layer), f"no modules found for {layer}"
    assert _violations(layer) == []


def test_only_the_broker_boundary_imports_pika() -> None:
    importers = sorted(
        str(p.relative_to(RUNTIME))
        for root in (RUNTIME, SHOP, OPERATOR)
        for p in root.rglob("*.py")
        if any(n == "pika" or n.startswith("pika.") for n in imported_modules(p))
    )
    assert importers and all(p.startswith("broker/") for p in importers), importers


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The scan finds imports anywhere in a module, so a passing run means something."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from warren_shop.roles import orders\n")
    assert "warren_shop.roles.orders" in imported_modules(module)
