"""Registering the "lumbar-classify" task with transformers' pipeline factory, lazily.

`import hubkit` calls `install_lazy_registration()`: it imports only the standard library, and registers the task
the moment `transformers.pipelines` is first imported (or at once if it already is), so `hubkit --help` stays
instant and `pipeline("lumbar-classify", ...)` works in either import order.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings

TASK = "lumbar-classify"


def register() -> None:
    """Register "lumbar-classify" in transformers' PIPELINE_REGISTRY (imports transformers; idempotent)."""
    from transformers.pipelines import PIPELINE_REGISTRY

    from .pipeline import _classes

    pipe_cls, model_cls = _classes()
    current = PIPELINE_REGISTRY.supported_tasks.get(TASK)
    if current is not None and current.get("impl") is pipe_cls:
        return
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=pipe_cls, pt_model=model_cls, type="multimodal")


def _register_quietly() -> None:
    try:
        register()
    except Exception as e:  # never break `import transformers.pipelines` for the user
        warnings.warn(f"hubkit could not register the {TASK!r} pipeline: {e}", stacklevel=2)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """One-shot import hook: runs `register()` right after `transformers.pipelines` has been imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "transformers.pipelines":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            _register_quietly()

        spec.loader.exec_module = exec_module
        return spec


def install_lazy_registration() -> None:
    """Make "lumbar-classify" available to `transformers.pipeline` without importing transformers now.

    Registers at once if `transformers.pipelines` is already imported, else when it is first imported.
    `hubkit/__init__.py` calls this, so `import hubkit` stays fast (`hubkit --help`).
    """
    if "transformers.pipelines" in sys.modules:
        _register_quietly()
        return
    if not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())

