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
# The CLI's development verbs (`hubkit.cli_dev`) are the only product code that may call into the stand-ins, lazily,
# inside the verb that runs.
CLI_DEV = "hubkit.cli_dev"


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
    for room in ("hubkit.training", "hubkit.inference", "hubkit.evaluation", "hubkit.devkit", "hubkit.space"):
        assert room in MODULES, room


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if m.startswith(("hubkit.inference", "hubkit.space"))))
def test_inference_never_reaches_training_or_evaluation(mod):
    """Nor does the Space's app: it installs the inference extra only."""
    bad = sorted(m for m in _reachable(mod) if m.startswith(("hubkit.training", "hubkit.evaluation")))
    assert not bad, f"{mod} imports (directly or through other modules) {bad}"


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if not m.startswith("hubkit.devkit")))
def test_product_never_imports_the_stand_ins(mod):
    for imported, func in _imports(mod, MODULES[mod]):
        if imported.startswith("hubkit.devkit"):
            assert mod == CLI_DEV and func is not None, f"{mod} ({func or 'module level'}) imports {imported}"


def test_the_rules_can_fail():
    """The checks above see a violation when there is one (so they are not vacuous)."""
    assert any(m.startswith("hubkit.training") for m in _reachable("hubkit.cli"))
    assert any(i.startswith("hubkit.devkit") for i, _ in _imports(CLI_DEV, MODULES[CLI_DEV]))


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_modules_stay_small(mod):
    lines = len(MODULES[mod].read_text().splitlines())
    assert lines <= 400, f"{mod}: {lines} lines; split it by what it owns"


# The records own their file names: a module that needs a run's, a calibration's or an evaluation's file asks
# `hubkit.run_record` / `hubkit.eval_record`, so a name is changed in one place.
RECORD_MODULES = {"hubkit.run_record", "hubkit.eval_record"}
RECORD_FILES = ("hubkit_config.json", "calibration.json", "adapter_config.json", "adapter_model.safetensors",
                "training_log.jsonl", "hubkit_evaluation.json", "eval_config.json", "results_finetuned.json",
                "results_base.json", "predictions.csv", "predictions.jsonl", "predictions_base.csv",
                "predictions_base.jsonl")


def _spelled_file_names(source: str) -> list[str]:
    """Record file names a module's code spells: string constants (f-string parts included) that are such a name or
    a path ending in one. Prose that mentions a name (help texts, messages) is not a spelling of it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.strip().strip("/")
            found += [n for n in RECORD_FILES if text == n or text.endswith("/" + n)]
    return found


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if m not in RECORD_MODULES))
def test_only_the_record_modules_spell_the_record_file_names(mod):
    spelled = _spelled_file_names(MODULES[mod].read_text())
    assert not spelled, f"{mod} spells {spelled}: import the name from hubkit.run_record / hubkit.eval_record"


def test_the_file_name_rule_can_fail():
    assert _spelled_file_names('p = run / "hubkit_config.json"') == ["hubkit_config.json"]
    assert _spelled_file_names('p = f"{run}/calibration.json"') == ["calibration.json"]
    assert _spelled_file_names('help = "apply the model\'s calibration.json"') == []
    assert _spelled_file_names(MODULES["hubkit.run_record"].read_text())  # the rule sees the owner's own names
