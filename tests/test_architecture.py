"""The rooms' import rules (ARCHITECTURE.md), read from the source: inference never reaches training or evaluation,
the product never reaches the dev stand-ins, and no module outgrows its room."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Installed name of each source folder (pyproject.toml's package-dir).
ROOTS = {"hubkit": REPO / "hubkit", "hubkit.cards": REPO / "cards", "hubkit.dataset_builder": REPO / "dataset_builder",
         "hubkit.configs": REPO / "configs"}
# The CLI's development verbs are the only product code that may call into the stand-ins (lazily, when run).
CLI_DEV_VERBS = {"synth", "base_tiny", "base_medgemma_arch", "hub_serve"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, root in ROOTS.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("").parts
            if pkg == "hubkit" and rel[0] in ("cards", "dataset_builder"):
                continue
            name = ".".join((pkg, *rel))
            out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(imported module, enclosing top-level function or None) for every import statement in the module."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            f = child.name if func is None and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Import):
                found.extend((a.name, func) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                found.append((mod, func))
                found.extend((f"{mod}.{a.name}", func) for a in child.names if f"{mod}.{a.name}" in MODULES)
            visit(child, f)

    visit(tree, None)
    return [(m, f) for m, f in found if m.startswith("hubkit")]


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        mod = todo.pop()
        if mod in seen or mod not in MODULES:
            continue
        seen.add(mod)
        todo.extend(m for m, _ in _imports(mod, MODULES[mod]))
    return seen


def test_the_rooms_exist():
    for room in ("hubkit.training", "hubkit.inference", "hubkit.evaluation", "hubkit.devkit"):
        assert room in MODULES, room


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if m.startswith("hubkit.inference")))
def test_inference_never_reaches_training_or_evaluation(mod):
    bad = sorted(m for m in _reachable(mod) if m.startswith(("hubkit.training", "hubkit.evaluation")))
    assert not bad, f"{mod} imports (directly or through other modules) {bad}"


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if not m.startswith("hubkit.devkit")))
def test_product_never_imports_the_stand_ins(mod):
    for imported, func in _imports(mod, MODULES[mod]):
        if imported.startswith("hubkit.devkit"):
            assert mod == "hubkit.cli" and func in CLI_DEV_VERBS, f"{mod} ({func or 'module level'}) imports {imported}"


def test_the_rules_can_fail():
    """The checks above see a violation when there is one (so they are not vacuous)."""
    assert any(m.startswith("hubkit.training") for m in _reachable("hubkit.cli"))
    assert any(i.startswith("hubkit.devkit") for i, _ in _imports("hubkit.cli", MODULES["hubkit.cli"]))


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_modules_stay_small(mod):
    lines = len(MODULES[mod].read_text().splitlines())
    assert lines <= 400, f"{mod}: {lines} lines; split it by what it owns"
