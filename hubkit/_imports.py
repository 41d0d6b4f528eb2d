"""Optional dependencies: one way to fail when one is missing, and what is installed (for run/eval records).

    from hubkit._imports import require
    require("bitsandbytes", extra="gpu", purpose="4-bit loading")     # ImportError naming the pip line
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "hubkit"  # the name pip installs hubkit under (its extras: gpu, decoders, train, test)


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


def versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """{package: installed version or None}."""
    out: dict[str, str | None] = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
