"""Optional dependencies: one way to fail when one is missing, and what is installed (for run/eval records).

    from hubkit._imports import require
    require("bitsandbytes", extra="gpu", purpose="4-bit loading")     # ImportError naming the pip line
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import PackageNotFoundError, version

# The name pip installs hubkit under ("hubkit" on the public index is another project); extras: inference, train,
# gpu, decoders, test.
DISTRIBUTION = "hubkit-lumbar"
# Where its source lives (pyproject.toml's [project.urls] Repository; a test holds the two equal).
SOURCE_URL = "https://github.com/hubkit-lumbar/hubkit"
# What the consumer's verbs (the pipeline, predict) need beyond the base install: the `inference` extra.
INFERENCE_MODULES = ("torch", "transformers", "peft", "accelerate")
# What the trainer's verbs (build-dataset, train, evaluate, synth, the demo) need beyond an inference install.
TRAIN_MODULES = ("datasets", "trl", "evaluate", "matplotlib", "pandas")


def install_hint(extra: str) -> str:
    """The pip line that installs hubkit's `extra`."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def available(module: str) -> bool:
    """True if `module` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def require(module: str, extra: str, purpose: str) -> None:
    """Raise ImportError("<purpose> needs <module>: pip install 'hubkit[<extra>]'") unless `module` is installed."""
    if not available(module):
        raise ImportError(f"{purpose} needs {module}: {install_hint(extra)}")


def require_inference(purpose: str) -> None:
    """`require` for everything the `inference` extra brings (the base install lacks the model stack)."""
    missing = [m for m in INFERENCE_MODULES if not available(m)]
    if missing:
        raise ImportError(f"{purpose} needs {', '.join(missing)}: {install_hint('inference')}")


def require_train(purpose: str) -> None:
    """`require` for everything the `train` extra brings (it includes the inference extra's model stack)."""
    missing = [m for m in INFERENCE_MODULES + TRAIN_MODULES if not available(m)]
    if missing:
        raise ImportError(f"{purpose} needs {', '.join(missing)}: {install_hint('train')}")


def versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """{package: installed version or None}; "hubkit" is looked up under its distribution name."""
    out: dict[str, str | None] = {}
    for pkg in packages:
        try:
            out[pkg] = version(DISTRIBUTION if pkg == "hubkit" else pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
