"""`hubkit env`: what a bug report needs to know of this machine, as `transformers env` and `datasets-cli env` give it.

    from hubkit.environment import report
    for key, value in report().items(): print(f"- {key}: {value}")

Versions of hubkit and of every library it drives, the platform, the CPU and memory, the accelerators torch sees,
the Hub endpoint, whether a token is set and where it comes from (never the token), and the offline switches.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

from hubkit._imports import DISTRIBUTION, available, versions

LIBRARIES = ("torch", "transformers", "huggingface_hub", "peft", "accelerate", "datasets", "trl", "evaluate",
             "pydicom", "numpy", "pillow", "bitsandbytes", "unsloth")
# Environment variables that change what hubkit does (their values are shown; none of them holds a secret).
SWITCHES = ("HF_ENDPOINT", "HF_HOME", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_XET", "HUBKIT_DEBUG", "CUDA_VISIBLE_DEVICES",
            "OMP_NUM_THREADS")


def report() -> dict[str, Any]:
    """{what: value}, every value a plain string (see the module docstring)."""
    from importlib.metadata import PackageNotFoundError, distribution

    out: dict[str, Any] = {}
    try:
        direct = json.loads(distribution(DISTRIBUTION).read_text("direct_url.json") or "{}")
        editable = bool((direct.get("dir_info") or {}).get("editable"))
        out["hubkit"] = f"{versions(('hubkit',))['hubkit']} ({DISTRIBUTION}{', editable' if editable else ''})"
    except PackageNotFoundError:
        out["hubkit"] = "not installed (running from a source folder)"
    out["python"] = f"{platform.python_version()} ({sys.executable})"
    out["platform"] = platform.platform()
    out["cpu"] = f"{_cpu_name()}, {os.cpu_count()} logical cores"
    out["memory"] = _memory()
    pkgs = versions(tuple("Pillow" if p == "pillow" else p for p in LIBRARIES))
    for name in LIBRARIES:
        out[name] = pkgs.get("Pillow" if name == "pillow" else name) or "not installed"
    out["accelerators"] = _accelerators()
    out.update(_hub())
    for var in SWITCHES:
        if var in os.environ:
            out[var] = os.environ[var]
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return f"{pages * size / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        return "unknown"


def _accelerators() -> str:
    if not available("torch"):
        return "unknown (torch is not installed)"
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"CUDA {torch.version.cuda}: " + ", ".join(names)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "Apple MPS"
    return f"none (CPU only; torch uses {torch.get_num_threads()} threads)"


def _hub() -> dict[str, str]:
    """The endpoint, and whether a token is set and from where: never the token itself."""
    from huggingface_hub import get_token

    from hubkit.hub import hub_endpoint

    where = ("HF_TOKEN" if os.environ.get("HF_TOKEN") else
             "the stored login (`hf auth login`)" if get_token() else None)
    return {"hub endpoint": hub_endpoint(), "hub token": f"set (from {where})" if where else "not set"}
