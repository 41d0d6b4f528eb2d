"""A wheel of the hubkit that is running, to ship beside what it published: no package index has hubkit, so a model
repo (and a Space) carries the wheel of the hubkit that made it, and its card installs that file.

    from hubkit.packaging import wheel_of_this_hubkit
    path = wheel_of_this_hubkit("dist")          # dist/hubkit_lumbar-0.1.0-py3-none-any.whl

From a source checkout (an editable install, or running from a clone) the wheel is built from the source with pip;
from an installed wheel it is packed again from the installed files its RECORD lists (the same files, the same
metadata), so it works offline either way.
"""

from __future__ import annotations

import atexit
import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from hubkit._imports import DISTRIBUTION

__all__ = ["wheel_name", "wheel_of_this_hubkit", "source_root"]


def wheel_name() -> str:
    """The file name of this hubkit's wheel (pure Python, any platform)."""
    return f"{DISTRIBUTION.replace('-', '_')}-{metadata.version(DISTRIBUTION)}-py3-none-any.whl"


def source_root() -> Path | None:
    """The checkout this hubkit runs from (its pyproject.toml names the distribution), or None for an installed one."""
    root = Path(__file__).resolve().parents[1]
    project = root / "pyproject.toml"
    if project.is_file() and f'name = "{DISTRIBUTION}"' in project.read_text(encoding="utf-8"):
        return root
    return None


def wheel_of_this_hubkit(out_dir: str | os.PathLike) -> Path:
    """Write this hubkit's wheel into OUT_DIR (built once per process, then copied); returns its path.

    Raises:
        RuntimeError: the source cannot be built (pip's last line says why), or the installed files are missing.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / wheel_name()
    if _BUILT.get(path.name) is not None and _BUILT[path.name].is_file():  # built once per process: copied after
        shutil.copyfile(_BUILT[path.name], path)
        return path
    _BUILT[path.name] = _build(path)
    return path


_BUILT: dict[str, Path] = {}


def _build(path: Path) -> Path:
    """Build the wheel at `path`; returns a copy kept for this process's later calls."""
    root = source_root()
    if root is not None:
        with tempfile.TemporaryDirectory() as tmp:
            res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                                  "-w", tmp, str(root)], capture_output=True, text=True)
            built = sorted(Path(tmp).glob("*.whl"))
            if res.returncode != 0 or not built:
                last = (res.stderr.strip().splitlines() or ["no wheel written"])[-1]
                raise RuntimeError(f"cannot build hubkit's wheel from {root}: {last}")
            os.replace(built[0], path)
    else:
        _repack_installed(path)
    tmp = tempfile.mkdtemp(prefix="hubkit-wheel-")
    atexit.register(shutil.rmtree, tmp, True)
    keep = Path(tmp) / path.name
    shutil.copyfile(path, keep)
    return keep


def _repack_installed(path: Path) -> None:
    """Pack the installed distribution's files (its RECORD) into a wheel, with a RECORD of their new hashes."""
    dist = metadata.distribution(DISTRIBUTION)
    files = [f for f in dist.files or [] if "__pycache__" not in str(f) and not str(f).startswith("..")
             and not str(f).endswith(("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"))]
    if not files:
        raise RuntimeError(f"{DISTRIBUTION} lists no installed files: reinstall it, or build from a clone")
    rows = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            data = Path(dist.locate_file(f)).read_bytes()
            name = str(f).replace(os.sep, "/")
            z.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append([name, f"sha256={digest}", str(len(data))])
        record = next(str(f) for f in dist.files if str(f).endswith(".dist-info/RECORD")).replace(os.sep, "/")
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([*rows, [record, "", ""]])
        z.writestr(record, text.getvalue())
    path.write_bytes(buf.getvalue())
